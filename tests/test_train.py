"""Training on the tiny model: it learns, it is reproducible, LoRA merges, saves round-trip."""

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, LlamaConfig

from helpers import models
from helpers.train import LORA_DEFAULTS, finetune, lora_parameter_count, training_memory_gb

EXAMPLES = [
    {
        "messages": [
            {"role": "user", "content": f"What is order {n}'s status?"},
            {"role": "assistant", "content": f"Hello! Order {n} ships today. Contact us."},
        ]
    }
    for n in range(8)
]
FAST = {"disable_tqdm": True, "per_device_train_batch_size": 4, "logging_steps": 2}


def _logits(model, tokenizer):
    ids = tokenizer("Hello! Order 3 ships", return_tensors="pt").input_ids
    model.eval()
    with torch.no_grad():
        return model(ids).logits


def test_tiny_model_overfits_a_handful_of_examples(tiny, tmp_path):
    model, tokenizer = tiny
    result = finetune(
        model,
        tokenizer,
        EXAMPLES,
        method="full",
        output_dir=tmp_path,
        num_train_epochs=20,
        learning_rate=3e-3,
        save=False,
        **FAST,
    )
    first, last = result.train_loss[0][1], result.train_loss[-1][1]
    assert last < first / 2, result.train_loss
    assert result.steps == 40 and not result.stopped_early
    assert result.trainable_params == result.total_params


def test_result_counts_tokens_time_and_memory(tiny, tokenizer, tmp_path):
    from helpers.chat import tokenize_dataset

    model, _ = tiny
    result = finetune(
        model,
        tokenizer,
        EXAMPLES,
        method="full",
        output_dir=tmp_path,
        num_train_epochs=2,
        save=False,
        **FAST,
    )
    _, report = tokenize_dataset(EXAMPLES, tokenizer)
    assert result.tokens_trained == 2 * report.tokens  # every real token, no padding
    assert result.tokens_per_second == pytest.approx(result.tokens_trained / result.train_seconds)
    assert 0 < result.train_seconds <= result.wall_seconds
    assert result.peak_memory_mb > 0
    # AdamW keeps two fp32 moments per trainable weight.
    assert result.optimizer_state_mb == pytest.approx(
        2 * 4 * result.trainable_params / 2**20, rel=0.01
    )


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
    assert losses[0] == losses[1]


def test_lora_trains_only_the_adapters(tiny, tmp_path):
    model, tokenizer = tiny
    result = finetune(
        model,
        tokenizer,
        EXAMPLES,
        method="lora",
        output_dir=tmp_path,
        num_train_epochs=1,
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
    before = _logits(adapted, tokenizer)
    merged = adapted.merge_and_unload()
    assert not hasattr(merged, "peft_config")
    torch.testing.assert_close(_logits(merged, tokenizer), before, atol=1e-5, rtol=1e-4)


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


def test_best_checkpoint_is_restored_and_early_stopping_stops(tiny, tmp_path):
    model, tokenizer = tiny
    # A learning rate far too high makes validation loss rise after the first evaluations.
    result = finetune(
        model,
        tokenizer,
        EXAMPLES,
        EXAMPLES[:4],
        method="full",
        output_dir=tmp_path,
        num_train_epochs=30,
        learning_rate=0.5,
        early_stopping_patience=2,
        eval_steps=2,
        save=False,
        **FAST,
    )
    assert result.stopped_early and result.steps < 60
    best_step, best_loss = min(result.eval_loss, key=lambda row: row[1])
    assert (result.best_step, result.best_eval_loss) == (best_step, best_loss)
    assert result.eval_loss[-1][1] > best_loss
    from helpers.evaluate import mean_loss

    restored = mean_loss(result.model, tokenizer, EXAMPLES[:4], batch_size=8, bf16=True)
    assert restored["loss"] == pytest.approx(best_loss, rel=0.02)


def test_unknown_method_is_refused(tiny, tmp_path):
    with pytest.raises(ValueError, match="method must be"):
        finetune(*tiny, EXAMPLES, method="qlora", output_dir=tmp_path)


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


def test_a_second_run_on_the_same_model_still_trains_in_bf16(tiny, tokenizer, tmp_path):
    model, _ = tiny
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


def test_memory_meter_sees_a_short_peak_between_samples():
    from helpers.train import MemoryMeter

    models.release_memory()  # so the block below needs fresh pages, not freed ones
    meter = MemoryMeter("cpu")
    meter.start()
    block = torch.ones(256 * 2**20 // 4)  # 256 MB, touched, then freed before stop()
    del block
    meter.stop()
    assert meter.peak_mb - meter.start_mb > 200
