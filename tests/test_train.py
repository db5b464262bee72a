"""Training on the tiny model: it learns, it is reproducible, LoRA merges, saves round-trip.

Where a verdict would otherwise hang on training dynamics (early stopping, the best
checkpoint) the evaluation metric is scripted; where learning itself is the point the
margin holds by construction (an untrained model is at ln(vocabulary) ~ 10.8).
"""

import json
import os
import sys
import time
from types import SimpleNamespace

import psutil
import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    Trainer,
    TrainerCallback,
)

from helpers import measure, models, train
from helpers.cli import train_config
from helpers.cli.train_config import ConfigError, load_config
from helpers.losses import mean_loss
from helpers.measure import TrainResult, training_memory_gb
from helpers.train import DEFAULT_LEARNING_RATES, LORA_DEFAULTS, finetune, lora_parameter_count

EXAMPLES = [
    {
        "messages": [
            {"role": "user", "content": f"What is order {n}'s status?"},
            {"role": "assistant", "content": f"Hello! Order {n} ships today. Contact us."},
        ]
    }
    for n in range(8)
]
QUIET = {"disable_tqdm": True, "logging_steps": 2}
FAST = {**QUIET, "per_device_train_batch_size": 4}

# Linux keeps a process's peak RSS and lets it be reset (VmHWM, /proc/self/clear_refs), so
# MemoryMeter sees a block freed within a step there. Elsewhere (macOS) it samples the RSS
# at step ends and misses such a block: the tests of that peak need Linux's record.
KERNEL_PEAK = sys.platform.startswith("linux") and os.access("/proc/self/clear_refs", os.W_OK)
NO_KERNEL_PEAK = (
    "needs Linux's resettable peak-RSS record (/proc/self/clear_refs); here memory is "
    "sampled at step ends, which misses a block freed within the step"
)
needs_kernel_peak = pytest.mark.skipif(not KERNEL_PEAK, reason=NO_KERNEL_PEAK)


def _logits(model, tokenizer):
    ids = tokenizer("Hello! Order 3 ships", return_tensors="pt").input_ids
    model.eval()
    with torch.no_grad():
        return model(ids).logits


def _weights(model) -> dict:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


class Recorder(TrainerCallback):
    """Keeps the TrainingArguments a run actually used."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.args = args


@pytest.mark.slow  # trains (or runs a subprocess) for seconds
def test_tiny_model_learns_the_examples_it_is_shown(tiny, tmp_path):
    model, tokenizer = tiny
    before = mean_loss(model, tokenizer, EXAMPLES[:4], bf16=False)
    result = finetune(
        model,
        tokenizer,
        EXAMPLES[:4],
        method="full",
        output_dir=tmp_path,
        max_steps=12,
        learning_rate=1e-2,
        lr_scheduler_type="constant",
        save=False,
        **FAST,
    )
    after = mean_loss(result.model, tokenizer, EXAMPLES[:4], bf16=False)
    # Untrained: ~10.8 (uniform over 49k tokens). Seeds 0 and 1 reach 1.93 and 1.99 here.
    assert before["loss"] > 10 and after["loss"] < before["loss"] / 3, (before, after)
    assert result.steps == 12 and not result.stopped_early
    assert result.trainable_params == result.total_params


@pytest.mark.slow  # trains (or runs a subprocess) for seconds
def test_result_counts_tokens_memory_and_optimizer_state(tiny, tmp_path):
    model, tokenizer = tiny
    block_mb = 256

    class Allocate(TrainerCallback):
        """Holds a known block of memory through the first step."""

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 0:
                self.block = torch.ones(block_mb * 2**20 // 4)  # touched, so resident
                self.rss_mb = psutil.Process().memory_info().rss / 2**20

        def on_step_end(self, args, state, control, **kwargs):
            self.__dict__.pop("block", None)

    allocate = Allocate()
    result = finetune(
        model,
        tokenizer,
        EXAMPLES,
        method="full",
        output_dir=tmp_path,
        num_train_epochs=2,
        callbacks=[allocate],
        save=False,
        **FAST,
    )
    # Every token of every example, twice, no padding: counted here from the chat template.
    rendered = [tokenizer.apply_chat_template(e["messages"], return_dict=True) for e in EXAMPLES]
    assert result.tokens_trained == 2 * sum(len(r["input_ids"]) for r in rendered)
    # AdamW keeps two fp32 moments per trainable weight.
    assert result.optimizer_state_mb == pytest.approx(
        2 * 4 * result.trainable_params / 2**20, rel=0.01
    )
    if not KERNEL_PEAK:  # the block is freed before the step's end, where memory is sampled
        pytest.skip(f"tokens and optimizer state checked; the memory peak {NO_KERNEL_PEAK}")
    assert result.memory_increase_mb > block_mb * 0.9
    assert result.peak_memory_mb >= allocate.rss_mb


@pytest.mark.slow  # trains (or runs a subprocess) for seconds
def test_packed_run_counts_every_token_it_trains_on(tiny, tmp_path):
    """A packed batch has no padding: the end-of-turn token, also the pad token, counts."""
    model, tokenizer = tiny
    result = finetune(
        model,
        tokenizer,
        EXAMPLES,
        output_dir=tmp_path,
        packing=True,
        num_train_epochs=1,
        save=False,
        **FAST,
    )
    rendered = [tokenizer.apply_chat_template(e["messages"], return_dict=True) for e in EXAMPLES]
    ends = sum(r["input_ids"].count(tokenizer.pad_token_id) for r in rendered)
    assert ends >= 2 * len(EXAMPLES)  # an <|im_end|> per turn: what was lost
    assert result.tokens_trained == sum(len(r["input_ids"]) for r in rendered)
    assert result.tokens_per_second == result.tokens_trained / result.train_seconds


def _toy_trainer(output_dir, collator, max_steps: int) -> Trainer:
    """A Trainer on a 64-token-vocabulary model, whose steps take milliseconds."""
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    row = {
        "input_ids": list(range(1, 17)),
        "attention_mask": [1] * 16,
        "labels": list(range(1, 17)),
    }
    args = train.training_arguments(
        output_dir, has_eval=False, max_steps=max_steps, per_device_train_batch_size=4, **QUIET
    )
    data = Dataset.from_list([row] * 12)
    return Trainer(LlamaForCausalLM(config), args, train_dataset=data, data_collator=collator)


def test_step_time_includes_loading_the_batch(tmp_path, monkeypatch):
    pause, steps, clock = 100.0, 3, [0.0]  # a scripted clock: collating takes 100 s
    monkeypatch.setattr(
        measure, "time", SimpleNamespace(perf_counter=lambda: time.perf_counter() + clock[0])
    )

    def slow_collate(rows):
        clock[0] += pause  # Trainer collates before on_step_begin
        return {key: torch.tensor([row[key] for row in rows]) for key in rows[0]}

    start = measure.time.perf_counter()
    result = train.run(_toy_trainer(tmp_path, slow_collate, steps))
    outside = measure.time.perf_counter() - start
    assert result.steps == steps and result.tokens_trained == steps * 4 * 16
    assert result.train_seconds >= steps * pause
    assert result.train_seconds <= result.wall_seconds <= outside
    tokens = result.tokens_trained
    assert tokens / outside <= result.tokens_per_second <= tokens / (steps * pause)


@pytest.mark.slow  # trains (or runs a subprocess) for seconds
@pytest.mark.skipif(
    not KERNEL_PEAK,
    reason="needs Linux: glibc's heap, which release_memory trims (malloc_trim elsewhere does "
    "nothing), and the resettable peak-RSS record",
)
def test_a_run_is_not_charged_for_memory_an_earlier_run_freed(tiny, tmp_path):
    """Heap memory freed but kept by the C allocator would hide this run's own growth."""
    model, tokenizer = tiny
    chunk = 16 * 1024  # floats: 64 KB, small enough for the C heap (larger ones are mmapped)
    freed = [torch.ones(chunk) for _ in range(8192)]  # 512 MB, as an earlier run leaves it
    pin = torch.ones(chunk)  # above them, so the heap cannot shrink back by itself
    del freed

    class Allocate(TrainerCallback):
        """Holds 256 MB in heap-sized chunks through the first step."""

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 0:
                self.blocks = [torch.ones(chunk) for _ in range(4096)]

        def on_step_end(self, args, state, control, **kwargs):
            self.__dict__.pop("blocks", None)

    result = finetune(
        model,
        tokenizer,
        EXAMPLES,
        output_dir=tmp_path,
        max_steps=1,
        callbacks=[Allocate()],
        save=False,
        **FAST,
    )
    del pin
    # Without giving the freed heap back first, the 256 MB reuse it and the run shows ~0.
    assert result.memory_increase_mb > 256 * 0.9


@pytest.mark.slow  # trains (or runs a subprocess) for seconds
def test_same_seed_gives_the_same_losses(tmp_path):
    losses = []
    for run in range(2):
        model, tokenizer = models.tiny_model(seed=0)
        result = finetune(
            model,
            tokenizer,
            EXAMPLES,
            EXAMPLES[:2],
            method="lora",
            output_dir=tmp_path / str(run),
            num_train_epochs=2,
            learning_rate=1e-2,
            seed=7,
            save=False,
            **FAST,
        )
        losses.append(result.train_loss + result.eval_loss)
    assert len(losses[0]) == 4 and losses[0] == losses[1]


@pytest.mark.slow  # trains (or runs a subprocess) for seconds
def test_lora_trains_only_the_adapters(tiny, tmp_path):
    model, tokenizer = tiny
    base = _weights(model)
    result = finetune(
        model,
        tokenizer,
        EXAMPLES,
        method="lora",
        output_dir=tmp_path,
        max_steps=2,
        learning_rate=1e-2,
        save=False,
        **FAST,
    )
    config = model.config
    kv_width = config.num_key_value_heads * config.hidden_size // config.num_attention_heads
    r = LORA_DEFAULTS["r"]
    # q_proj: A (r x hidden) + B (hidden x r); v_proj: A (r x hidden) + B (kv_width x r)
    per_layer = r * (2 * config.hidden_size) + r * (config.hidden_size + kv_width)
    assert result.trainable_params == per_layer * config.num_hidden_layers
    base_total = models.count_parameters(models.tiny_model(seed=0)[0])[1]
    assert result.total_params == base_total + result.trainable_params
    changed = []
    for name, value in result.model.named_parameters():
        original = name.removeprefix("base_model.model.").replace(".base_layer", "")
        if original not in base:
            assert "lora_" in name and value.requires_grad, name
        elif not torch.equal(value, base[original]):
            changed.append(name)
    assert not changed, f"base weights changed: {changed}"


@pytest.mark.slow  # trains (or runs a subprocess) for seconds
def test_lora_merge_gives_the_same_logits(tiny, tmp_path):
    model, tokenizer = tiny
    result = finetune(
        model,
        tokenizer,
        EXAMPLES,
        method="lora",
        output_dir=tmp_path,
        num_train_epochs=2,
        learning_rate=1e-2,
        save=False,
        **FAST,
    )
    adapted = result.model
    # PEFT starts B at zero; trained, the adapters change the output, so merging matters.
    assert all(p.abs().sum() > 0 for n, p in adapted.named_parameters() if "lora_B" in n)
    before = _logits(adapted, tokenizer)
    merged = adapted.merge_and_unload()
    assert not hasattr(merged, "peft_config")
    torch.testing.assert_close(_logits(merged, tokenizer), before, atol=1e-5, rtol=1e-4)


@pytest.mark.slow  # trains (or runs a subprocess) for seconds
def test_full_model_save_and_load_round_trip(tiny, tmp_path):
    model, tokenizer = tiny
    result = finetune(
        model, tokenizer, EXAMPLES, method="full", output_dir=tmp_path, num_train_epochs=1, **FAST
    )
    saved = tmp_path / "final"
    assert result.saved_dir == str(saved) and (saved / "model.safetensors").is_file()
    assert result.saved_size_mb == pytest.approx(
        (saved / "model.safetensors").stat().st_size / 2**20
    )
    reloaded, reloaded_tokenizer = models.load_base_model(str(saved), device="cpu")
    torch.testing.assert_close(
        _logits(reloaded, reloaded_tokenizer), _logits(result.model, tokenizer)
    )


@pytest.mark.slow  # trains (or runs a subprocess) for seconds
def test_adapter_save_and_load_round_trip(tiny, tmp_path):
    model, tokenizer = tiny
    result = finetune(
        model,
        tokenizer,
        EXAMPLES,
        method="lora",
        output_dir=tmp_path,
        num_train_epochs=2,
        learning_rate=1e-2,
        **FAST,
    )
    saved = tmp_path / "final"
    assert (saved / "adapter_model.safetensors").is_file()
    assert not (saved / "model.safetensors").exists()
    assert result.saved_size_mb < 0.1  # the adapter only, not the base model
    base, _ = models.tiny_model(seed=0)
    reloaded = PeftModel.from_pretrained(base, saved)
    torch.testing.assert_close(_logits(reloaded, tokenizer), _logits(result.model, tokenizer))


class ScriptedLoss(TrainerCallback):
    """Replaces each evaluation's loss by the next scripted value and snapshots the weights.

    It must run before EarlyStoppingCallback (finetune puts the caller's callbacks first);
    Trainer picks the best checkpoint from the metrics after every callback has seen them.
    The logged value is replaced too, so the result's history shows what Trainer judged.
    """

    def __init__(self, losses):
        self.losses = list(losses)
        self.weights = {}

    def on_evaluate(self, args, state, control, metrics, model=None, **kwargs):
        loss = self.losses.pop(0)
        metrics["eval_loss"] = loss
        assert state.log_history[-1]["step"] == state.global_step
        state.log_history[-1]["eval_loss"] = loss
        self.weights[state.global_step] = _weights(model)


@pytest.mark.slow  # trains (or runs a subprocess) for seconds
def test_best_checkpoint_is_restored_and_early_stopping_stops(tiny, tmp_path):
    model, tokenizer = tiny
    # Evaluations at steps 1, 2, ...: best at step 2; step 3 only ties it, step 4 is worse.
    scripted = ScriptedLoss([3.0, 2.0, 2.0, 2.5, 1.0, 1.0])
    result = finetune(
        model,
        tokenizer,
        EXAMPLES,
        EXAMPLES[:1],
        method="full",
        output_dir=tmp_path,
        max_steps=20,
        learning_rate=1e-3,
        early_stopping_patience=2,
        eval_steps=1,
        callbacks=[scripted],
        save=False,
        **FAST,
    )
    assert result.stopped_early and result.steps == 4  # two evaluations without improvement
    assert [step for step, _ in result.eval_loss] == [1, 2, 3, 4]
    assert (result.best_step, result.best_eval_loss) == (2, 2.0)
    restored = result.model.state_dict()
    on_disk = load_file(tmp_path / "checkpoints" / "checkpoint-2" / "model.safetensors")
    assert on_disk and all(torch.equal(restored[name], on_disk[name]) for name in on_disk)
    at_best, at_end = scripted.weights[2], scripted.weights[4]
    assert all(torch.equal(restored[name], at_best[name]) for name in at_best)
    assert not all(torch.equal(restored[name], at_end[name]) for name in at_end)


def test_unknown_method_is_refused(tiny, tmp_path):
    with pytest.raises(ValueError, match="method must be"):
        finetune(*tiny, EXAMPLES, method="qlora", output_dir=tmp_path)


@pytest.mark.slow  # trains (or runs a subprocess) for seconds
def test_saved_full_model_is_a_transformers_folder(tiny, tmp_path):
    model, tokenizer = tiny
    finetune(
        model, tokenizer, EXAMPLES, method="full", output_dir=tmp_path, num_train_epochs=1, **FAST
    )
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "final").config.hidden_size == 64


def test_lora_count_by_hand_matches_peft(tiny):
    model, _ = tiny
    target_modules = ["q_proj", "v_proj", "down_proj"]
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=target_modules))
    by_hand = lora_parameter_count(model.config, 4, target_modules)
    assert by_hand == models.count_parameters(peft_model)[0] > 0


def test_lora_count_for_llama2_7b_is_the_articles_0_06_percent():
    llama2 = LlamaConfig(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
    )
    assert lora_parameter_count(llama2, 8, ["q_proj", "v_proj"]) == 32 * 2 * 8 * (4096 + 4096)


def test_memory_model_charges_optimizer_state_to_trainable_weights_only():
    shape = dict(tokens=512, layers=30, hidden=576, heads=9, seq_len=128)
    full = training_memory_gb(1_000_000, 1_000_000, 4, **shape)
    lora = training_memory_gb(1_000_000, 10_000, 4, **shape)
    assert full["weights"] == lora["weights"] == 0.004
    assert full["gradients"] == 0.004 and lora["gradients"] == 0.00004
    assert full["adam_states"] == 0.008 and full["activations"] == lora["activations"]
    recomputed = training_memory_gb(1_000_000, 1_000_000, 4, recompute=True, **shape)
    assert recomputed["activations"] < full["activations"] / 10


@pytest.mark.slow  # trains (or runs a subprocess) for seconds
def test_a_second_run_on_the_same_model_still_trains_in_bf16(tiny, tmp_path):
    model, tokenizer = tiny
    autocast_seen = []
    model.model.layers[0].register_forward_hook(
        lambda *_: autocast_seen.append(torch.is_autocast_enabled("cpu"))
    )
    for run_dir in ("first", "second"):
        autocast_seen.clear()
        finetune(
            model,
            tokenizer,
            EXAMPLES,
            output_dir=tmp_path / run_dir,
            max_steps=1,
            bf16=True,
            use_cpu=True,
            save=False,
            **FAST,
        )
        assert autocast_seen and all(autocast_seen), f"{run_dir} run trained without bf16"
    # And the returned model is plain again: evaluation runs in fp32.
    autocast_seen.clear()
    with torch.no_grad():
        logits = model(torch.tensor([[1, 2, 3]])).logits
    assert autocast_seen == [False] and logits.dtype == torch.float32


@needs_kernel_peak
def test_memory_meter_sees_a_short_peak_between_samples():
    from helpers.measure import MemoryMeter

    models.release_memory()  # so the block below needs fresh pages, not freed ones
    meter = MemoryMeter("cpu")
    meter.start()
    block = torch.ones(256 * 2**20 // 4)  # 256 MB, touched, then freed before stop()
    del block
    meter.stop()
    assert meter.peak_mb - meter.start_mb > 200


# --- default learning rates, truncation report, the result as data ----------------------------


@pytest.mark.parametrize("method", ["full", "lora"])
def test_each_method_gets_its_default_learning_rate(method, tiny, tmp_path):
    recorder = Recorder()
    finetune(
        *tiny,
        EXAMPLES[:2],
        method=method,
        output_dir=tmp_path,
        max_steps=1,
        callbacks=[recorder],
        save=False,
        **FAST,
    )
    assert recorder.args.learning_rate == DEFAULT_LEARNING_RATES[method]
    assert DEFAULT_LEARNING_RATES == {"full": 5e-5, "lora": 1e-3}


def test_a_given_learning_rate_wins_over_the_default(tiny, tmp_path):
    recorder = Recorder()
    finetune(
        *tiny,
        EXAMPLES[:2],
        method="lora",
        output_dir=tmp_path,
        max_steps=1,
        learning_rate=3e-4,
        callbacks=[recorder],
        save=False,
        **FAST,
    )
    assert recorder.args.learning_rate == 3e-4


def test_result_lists_the_truncated_and_dropped_examples(tiny, tmp_path):
    from helpers.chat import TokenizationReport

    long_reply = {  # the reply is cut short, but some of it is left to train on
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello! " + "Our shipping is fast. " * 30},
        ]
    }
    long_prompt = {  # nothing of the reply is left
        "messages": [
            {"role": "user", "content": "Tell me about shipping. " * 40},
            {"role": "assistant", "content": "Hello! It ships today."},
        ]
    }
    data = [EXAMPLES[0], long_reply, EXAMPLES[1], long_prompt]
    with pytest.warns(UserWarning, match="truncated"):
        result = finetune(
            *tiny, data, output_dir=tmp_path, max_seq_length=64, max_steps=1, save=False, **FAST
        )
    assert result.truncated_examples == [2, 4]
    if "dropped_lines" not in TokenizationReport.__dataclass_fields__:
        pytest.skip("helpers.chat does not report dropped examples yet")
    assert result.dropped_examples == [4]


def test_result_as_data_leaves_the_model_out_and_uncopied():
    class Uncopyable:
        def __deepcopy__(self, memo):
            raise AssertionError("the model was copied")

    result = TrainResult(method="lora", trainable_params=1, total_params=4, model=Uncopyable())
    result.truncated_examples = [3]
    values = result.to_dict()
    assert "model" not in values and values["trainable_percent"] == 25.0
    assert values["truncated_examples"] == [3]
    assert "truncated_examples" not in result.summary()  # a table row holds no lists


# --- headless training configs ----------------------------------------------------------------

TRAIN_FILE = "data/samples/customer_service.jsonl"


def _config_error(tmp_path, text: str) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(str(path)), message
    return message


def test_config_yaml_syntax_error_names_line_and_column(tmp_path):
    message = _config_error(tmp_path, f"train_file: {TRAIN_FILE}\ntraining:\n  max_steps: [3\n")
    assert "line 4, column 1" in message and "not valid YAML" in message


def test_config_must_be_a_mapping(tmp_path):
    assert "must be a mapping" in _config_error(tmp_path, "- train_file: x.jsonl\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("method: lora\n", "run.yaml: 'train_file' is required"),
        ("train_file: data/none.jsonl\n", "line 1: train_file 'data/none.jsonl' does not exist"),
        (
            f"train_file: {TRAIN_FILE}\nvalidation_file: data/nope.jsonl\n",
            "line 2: validation_file 'data/nope.jsonl' does not exist",
        ),
        (f"train_file: {TRAIN_FILE}\nmethod: qlora\n", "line 2: method must be 'full' or 'lora'"),
        (f"train_file: {TRAIN_FILE}\nmax_seq_length: long\n", "line 2: max_seq_length must be"),
        (f"train_file: {TRAIN_FILE}\npacking: 1\n", "line 2: packing must be true or false"),
        (f"train_file: {TRAIN_FILE}\ntraining: [1, 2]\n", "line 2: training must be a mapping"),
        (f"train_file: {TRAIN_FILE}\nlora: 8\n", "line 2: lora must be a mapping"),
    ],
)
def test_config_top_level_mistakes_name_the_field_and_line(tmp_path, text, expected):
    assert expected in _config_error(tmp_path, text)


def test_config_unknown_training_field_lists_close_matches(tmp_path):
    text = f"train_file: {TRAIN_FILE}\ntraining:\n  max_steps: 3\n  learnin_rate: 0.1\n"
    message = _config_error(tmp_path, text)
    assert "line 4: training.learnin_rate is not a transformers.TrainingArguments field" in message
    assert "'learning_rate'" in message


def test_config_training_argument_at_the_top_level_says_where_it_goes(tmp_path):
    message = _config_error(tmp_path, f"train_file: {TRAIN_FILE}\nlearning_rate: 0.1\n")
    assert "unknown keys ['learning_rate']" in message and "under 'training:'" in message


def test_config_unknown_lora_key_and_fields_set_elsewhere(tmp_path):
    message = _config_error(tmp_path, f"train_file: {TRAIN_FILE}\nlora:\n  rank: 4\n")
    assert "line 3: lora.rank is not a peft.LoraConfig field" in message
    text = f"train_file: {TRAIN_FILE}\ntraining:\n  output_dir: x\n"
    assert "line 3: training.output_dir: set output_dir at the top level" in _config_error(
        tmp_path, text
    )


def test_config_number_that_yaml_reads_as_text(tmp_path):
    message = _config_error(
        tmp_path, f"train_file: {TRAIN_FILE}\ntraining:\n  weight_decay: 1e-2\n"
    )
    assert "line 3: training.weight_decay must be a number" in message and "1.0e-2" in message


def test_valid_config_gets_defaults_and_known_lora_options(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(f"train_file: {TRAIN_FILE}\ntraining:\nlora:\n  r: 4\n  use_rslora: true\n")
    config = load_config(path)
    assert config["method"] == "lora" and config["training"] == {}
    assert config["lora"] == {"r": 4, "use_rslora": True}


@pytest.mark.slow  # trains (or runs a subprocess) for seconds
def test_train_from_config_uses_the_lora_rate_and_the_process_device(tmp_path, monkeypatch):
    loaded, recorded = {}, []

    def fake_load(name, device=None, **kwargs):
        loaded.update(name=name, device=device, **kwargs)
        return models.tiny_model(seed=0)

    real_arguments = train.training_arguments

    def recording_arguments(*args, **kwargs):
        recorded.append(real_arguments(*args, **kwargs))
        return recorded[-1]

    monkeypatch.setattr(models, "load_base_model", fake_load)
    monkeypatch.setattr(train, "training_arguments", recording_arguments)
    path = tmp_path / "run.yaml"
    path.write_text(
        f"train_file: {TRAIN_FILE}\nmethod: lora\noutput_dir: {tmp_path / 'out'}\n"
        "lora:\n  use_rslora: true\n"
        "training:\n  max_steps: 1\n  per_device_train_batch_size: 2\n  disable_tqdm: true\n"
    )
    result = train_config.train_from_config(load_config(path))
    # models picks the device; LoRA's frozen weights load in the dtype the method wants
    dtype = models.frozen_weights_dtype("lora")
    assert loaded == {"name": models.EMBEDDED_MODEL, "device": None, "dtype": dtype}
    assert recorded[0].learning_rate == DEFAULT_LEARNING_RATES["lora"]
    assert result.steps == 1 and result.model.peft_config["default"].use_rslora


@pytest.mark.slow  # trains (or runs a subprocess) for seconds
def test_measure_callback_on_a_plain_trainer_counts_what_the_notebooks_need(tmp_path):
    """The notebooks' path: their own Trainer, ``callbacks=[meter]``, ``trainer.train()``."""
    from transformers import DataCollatorForSeq2Seq

    meter = measure.MeasureCallback()
    with pytest.raises(RuntimeError, match="finished trainer.train"):
        meter.result(None)
    trainer = _toy_trainer(tmp_path, None, max_steps=2)
    trainer.data_collator = DataCollatorForSeq2Seq(models.load_tokenizer(), padding=True)
    trainer.add_callback(meter)
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    result = meter.result(trainer, saved_dir=tmp_path / "final")
    assert result.steps == 2 and result.method == "full"
    assert result.tokens_trained == 2 * 4 * 16  # non-padding tokens, counted by Trainer
    assert result.saved_size_mb == pytest.approx(
        (tmp_path / "final" / "model.safetensors").stat().st_size / 2**20
    )
    saved = json.loads((tmp_path / "final" / "train_result.json").read_text())
    assert saved["steps"] == 2 and "model" not in saved


@pytest.mark.parametrize(
    ("precision", "overrides", "expected"),
    [
        ("fp16", {}, (False, True)),  # a T4: fp16 mixed precision, not emulated bf16
        ("fp16", {"fp16": False}, (False, False)),  # turned off: fp32
        ("bf16", {}, (True, False)),  # a GPU or CPU with bf16 in hardware
        ("bf16", {"fp16": True}, (False, True)),  # fp16 asked for: never both
        (None, {}, (False, False)),  # a CPU without bf16 in hardware
    ],
)
def test_training_arguments_take_the_devices_mixed_precision(
    monkeypatch, tmp_path, precision, overrides, expected
):
    asked = []
    monkeypatch.setattr(
        train, "mixed_precision", lambda device, bf16: asked.append(bf16) or precision
    )
    monkeypatch.setattr(train, "TrainingArguments", lambda output_dir, **values: values)
    values = train.training_arguments(tmp_path, **overrides)
    assert (values["bf16"], values["fp16"]) == expected
    assert asked == [None]  # the default leaves the choice to models.mixed_precision
    train.training_arguments(tmp_path, bf16=False)
    assert asked[-1] is False  # an explicit choice is passed on
