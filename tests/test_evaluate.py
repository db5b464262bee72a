"""Evaluation: metrics on known strings, batched generation, loss, tables and plots."""

import contextlib
import math
from types import SimpleNamespace

import pytest
import torch
from transformers.modeling_utils import slice_logits_to_keep

from helpers import evaluate, plots
from helpers.chat import tokenize_dataset
from helpers.measure import TrainResult

CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! Contact us."}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Tell me a much longer story about the shipping policy."},
        {"role": "assistant", "content": "Hello! Standard shipping takes 3-5 days."},
    ],
]


def test_text_metrics_on_known_strings():
    assert evaluate.exact_match("The Paris.", "paris") == 1.0
    assert evaluate.exact_match("Paris, France", "Paris") == 0.0
    assert evaluate.token_f1("the cat sat", "cat sat down") == pytest.approx(0.8)
    assert evaluate.token_f1("", "") == 1.0 and evaluate.token_f1("x", "") == 0.0
    assert evaluate.rouge_l("a b c d", "a b x d") == pytest.approx(0.75)


def test_score_adds_task_specific_checks():
    table = evaluate.score(
        ["Hello! Contact us.", "Bye"],
        ["Hello! Contact us.", "Hello!"],
        checks={"greets": lambda reply: reply.startswith("Hello!")},
    )
    assert list(table.columns) == ["exact_match", "token_f1", "rouge_l", "greets"]
    assert table["greets"].tolist() == [1.0, 0.0] and table["exact_match"].tolist() == [1.0, 0.0]
    means = evaluate.metrics_table(
        {"base": ["Bye", "Bye"], "tuned": ["Hello!", "Hello!"]},
        ["Hello!", "Hello!"],
        {"greets": lambda r: "Hello" in r},
    )
    assert means.loc["tuned", "exact_match"] == 1.0 and means.loc["base", "greets"] == 0.0


def test_batched_generation_equals_one_by_one(attentive_tiny):
    """Left padding and the attention mask make a batch answer as each prompt alone would."""
    model, tokenizer = attentive_tiny
    together = evaluate.generate(
        model, tokenizer, CONVERSATIONS, max_new_tokens=8, batch_size=2, bf16=False, progress=False
    )
    alone = [
        evaluate.generate(model, tokenizer, [c], max_new_tokens=8, bf16=False, progress=False)[0]
        for c in CONVERSATIONS
    ]
    assert together == alone and all(together)
    assert tokenizer.padding_side == "right"  # restored for training


def test_one_cap_per_prompt_answers_as_each_prompt_alone_with_its_cap(attentive_tiny):
    """Prompts of tasks with different lengths share a batch; each reply stops at its own cap."""
    model, tokenizer = attentive_tiny
    kwargs = {"bf16": False, "progress": False}
    together = evaluate.generate(model, tokenizer, CONVERSATIONS, [3, 8], batch_size=2, **kwargs)
    alone = [
        evaluate.generate(model, tokenizer, [c], max_new_tokens=cap, **kwargs)[0]
        for c, cap in zip(CONVERSATIONS, [3, 8], strict=True)
    ]
    assert together == alone
    uncut = evaluate.generate(model, tokenizer, CONVERSATIONS, 8, batch_size=2, **kwargs)
    assert uncut[0].startswith(together[0]) and uncut[0] != together[0]  # cut at 3 tokens
    assert uncut[1] == together[1]
    with pytest.raises(ValueError, match="2 caps in max_new_tokens for 1 prompts"):
        evaluate.generate(model, tokenizer, CONVERSATIONS[:1], [3, 8], **kwargs)


def test_one_batch_mixes_adapters_and_the_base_model_as_each_would_answer_alone(attentive_tiny):
    """PEFT's mixed-adapter batch: each row answers as its adapter (or the base model) alone."""
    from peft import LoraConfig, get_peft_model

    model, tokenizer = attentive_tiny
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    tuned = get_peft_model(model, config).eval()  # random A and B: the adapter changes answers
    kwargs = {"max_new_tokens": 8, "bf16": False, "progress": False}
    rows = [CONVERSATIONS[0], CONVERSATIONS[1], CONVERSATIONS[1], CONVERSATIONS[0]]
    names = ["default", "default", evaluate.BASE_MODEL, evaluate.BASE_MODEL]
    mixed = evaluate.generate(tuned, tokenizer, rows, batch_size=4, adapters=names, **kwargs)
    with_adapter = [evaluate.generate(tuned, tokenizer, [c], **kwargs)[0] for c in CONVERSATIONS]
    with tuned.disable_adapter():
        base = [evaluate.generate(tuned, tokenizer, [c], **kwargs)[0] for c in CONVERSATIONS]
    assert with_adapter != base  # otherwise the comparison below could not fail
    assert mixed == [with_adapter[0], with_adapter[1], base[1], base[0]]
    with pytest.raises(ValueError, match="1 adapters for 4 prompts"):
        evaluate.generate(tuned, tokenizer, rows, adapters=["default"], **kwargs)
    with pytest.raises(ValueError, match="needs a PEFT LoRA model"):
        evaluate.generate(model, tokenizer, rows[:1], adapters=["default"], **kwargs)


def test_generation_is_reproducible_when_sampling(tiny):
    model, tokenizer = tiny
    kwargs = {"max_new_tokens": 8, "do_sample": True, "temperature": 1.5, "progress": False}
    first = evaluate.generate(model, tokenizer, ["Hi"], seed=1, **kwargs)
    assert first == evaluate.generate(model, tokenizer, ["Hi"], seed=1, **kwargs)


def test_cached_casts_change_speed_not_answers(tiny, monkeypatch):
    """Caching the bf16 casts of a LoRA model's frozen weights changes speed, not answers."""
    from peft import LoraConfig, get_peft_model

    model, tokenizer = tiny
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and len(trainable) < len(list(model.parameters()))
    kwargs = {"max_new_tokens": 8, "bf16": True, "progress": False}
    cached = evaluate.generate(model, tokenizer, CONVERSATIONS, **kwargs)
    assert {name for name, p in model.named_parameters() if p.requires_grad} == trainable
    with pytest.raises(RuntimeError, match="boom"), evaluate.cached_casts(model):
        raise RuntimeError("boom")
    assert {name for name, p in model.named_parameters() if p.requires_grad} == trainable
    monkeypatch.setattr(evaluate, "cached_casts", lambda model: contextlib.nullcontext())
    assert cached == evaluate.generate(model, tokenizer, CONVERSATIONS, **kwargs)


def test_mean_loss_matches_the_model_loss_on_assistant_tokens(tiny):
    model, tokenizer = tiny
    examples = [{"messages": c} for c in CONVERSATIONS]
    result = evaluate.mean_loss(model, tokenizer, examples, bf16=False)
    dataset, report = tokenize_dataset(examples, tokenizer)
    assert result["tokens"] == report.trained_tokens
    losses, counts = [], []
    with torch.no_grad():
        for row in dataset:
            out = model(
                input_ids=torch.tensor([row["input_ids"]]), labels=torch.tensor([row["labels"]])
            )
            losses.append(out.loss.item())
            counts.append(sum(label != -100 for label in row["labels"][1:]))
    expected = sum(loss * n for loss, n in zip(losses, counts, strict=True)) / sum(counts)
    assert result["loss"] == pytest.approx(expected, rel=1e-4)
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]))


def test_mean_loss_of_a_prompt_tuned_model_scores_the_real_tokens_only(tiny, tmp_path):
    """Prompt tuning puts learned vectors first: the loss is PEFT's own, over the same tokens."""
    from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model

    model, tokenizer = tiny
    tokenizer.save_pretrained(tmp_path)  # PEFT reads the init text's tokens from a folder
    config = PromptTuningConfig(
        task_type=TaskType.CAUSAL_LM,
        num_virtual_tokens=5,
        prompt_tuning_init=PromptTuningInit.TEXT,
        prompt_tuning_init_text="Reply as the support team.",
        tokenizer_name_or_path=str(tmp_path),
    )
    prompted = get_peft_model(model, config)
    assert evaluate.virtual_tokens(prompted) == 5 and evaluate.virtual_tokens(model) == 0
    examples = [{"messages": c} for c in CONVERSATIONS]
    result = evaluate.mean_loss(prompted, tokenizer, examples, bf16=False)
    dataset, report = tokenize_dataset(examples, tokenizer)
    assert result["tokens"] == report.trained_tokens
    losses, counts = [], []
    with torch.no_grad():  # PEFT prefixes the labels with -100 for the virtual tokens
        for row in dataset:
            labels = torch.tensor([row["labels"]])
            losses.append(prompted(input_ids=torch.tensor([row["input_ids"]]), labels=labels).loss)
            counts.append(sum(label != -100 for label in row["labels"][1:]))
    expected = sum(loss.item() * n for loss, n in zip(losses, counts, strict=True)) / sum(counts)
    assert result["loss"] == pytest.approx(expected, rel=1e-4)
    plain = evaluate.mean_loss(model, tokenizer, examples, bf16=False)["loss"]
    assert abs(result["loss"] - plain) > 1e-4  # the virtual tokens change the prediction


def test_mean_loss_works_where_two_gpus_would_change_the_training_collator(tiny, monkeypatch):
    model, tokenizer = tiny
    examples = [{"messages": c} for c in CONVERSATIONS]
    expected = evaluate.mean_loss(model, tokenizer, examples, bf16=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert evaluate.mean_loss(model, tokenizer, examples, bf16=False) == expected


def test_generation_precision_is_the_faster_one_measured_on_each_device(monkeypatch):
    from helpers import models

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert models.use_bf16("cuda") is True  # training's bf16 on a GPU with bf16 in hardware
    assert evaluate.generation_bf16("cuda") is False and evaluate.generation_bf16("cuda:1") is False
    assert evaluate.generation_bf16("cuda", requested=True) is True
    assert evaluate.generation_bf16("mps") is False
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: True)
    assert evaluate.generation_bf16("cpu") is True and evaluate.generation_bf16(torch.device("cpu"))
    assert evaluate.generation_bf16("cpu", requested=False) is False
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: False)
    assert evaluate.generation_bf16("cpu") is False


def test_generate_uses_the_devices_generation_precision(tiny, monkeypatch):
    model, tokenizer = tiny
    asked = []

    def recording_autocast(device, bf16):
        asked.append((device, bf16))
        return contextlib.nullcontext()

    monkeypatch.setattr(evaluate, "autocast", recording_autocast)
    monkeypatch.setattr(evaluate, "generation_bf16", lambda device, requested=None: "measured")
    evaluate.generate(model, tokenizer, ["Hi"], max_new_tokens=2, progress=False)
    assert asked == [("cpu", "measured")]


class EvenOracle(torch.nn.Module):
    """A scripted model: at even positions it predicts the true next token, elsewhere token 0.

    Its logits are one-hot (1 on the predicted token, 0 elsewhere), so each token's loss is
    known in closed form: ``log(e - 1 + V) - 1`` when right, ``log(e - 1 + V)`` when wrong.
    """

    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the model a device

    def forward(self, input_ids, attention_mask=None, logits_to_keep=0, **kwargs):
        following = torch.roll(input_ids, -1, dims=1)
        even = torch.arange(input_ids.shape[1]) % 2 == 0
        predicted = torch.where(even, following, torch.zeros_like(following))
        logits = torch.zeros(*input_ids.shape, self.vocab_size)
        logits.scatter_(2, predicted.unsqueeze(-1), 1.0)
        # Transformers' convention: the last positions (an int), these positions, or a mask.
        return SimpleNamespace(logits=slice_logits_to_keep(logits, logits_to_keep))


def test_mean_loss_and_accuracy_on_a_scripted_model(tokenizer):
    examples = [{"messages": c} for c in CONVERSATIONS]
    dataset, _ = tokenize_dataset(examples, tokenizer)
    right = wrong = 0
    for row in dataset:
        for position, label in enumerate(row["labels"][1:]):  # predicted at ``position``
            if label != -100:
                right += position % 2 == 0
                wrong += position % 2 == 1
    vocab = len(tokenizer)
    per_token = math.log(math.e - 1 + vocab)
    expected_loss = (right * (per_token - 1) + wrong * per_token) / (right + wrong)
    model = EvenOracle(vocab)
    for data in (examples, dataset, dataset.add_column("length", [1] * len(dataset))):
        for batch_size in (1, 8):
            result = evaluate.mean_loss(model, tokenizer, data, batch_size=batch_size, bf16=False)
            assert result["tokens"] == right + wrong and 0 < right < right + wrong
            assert result["accuracy"] == right / (right + wrong)
            assert result["loss"] == pytest.approx(expected_loss, rel=1e-5)  # fp32 logsumexp


def test_example_losses_give_each_example_its_own_tokens_whatever_the_batch(tokenizer):
    """Per example, the summed loss and count in closed form, batched with padding or alone."""
    examples = [{"messages": c} for c in CONVERSATIONS * 2]
    dataset, _ = tokenize_dataset(examples, tokenizer)
    per_token = math.log(math.e - 1 + len(tokenizer))
    expected = []
    for row in dataset:  # the scripted model is right at even positions only
        trained = [p for p, label in enumerate(row["labels"][1:]) if label != -100]
        right = sum(p % 2 == 0 for p in trained)
        expected.append([len(trained) * per_token - right, len(trained)])
    assert expected[0][1] != expected[1][1]  # rows of different lengths share a padded batch
    model = EvenOracle(len(tokenizer))
    for batch_size in (1, 3, 8):
        rows = evaluate.example_losses(model, tokenizer, examples, batch_size, bf16=False)
        assert rows.shape == (4, 2) and rows[:, 1].tolist() == [n for _, n in expected]
        assert rows[:, 0] == pytest.approx([loss for loss, _ in expected], rel=1e-5)
    whole = evaluate.mean_loss(model, tokenizer, examples, bf16=False)
    assert rows[:, 0].sum() / rows[:, 1].sum() == pytest.approx(whole["loss"], rel=1e-6)


def test_compare_builds_a_side_by_side_table():
    table = evaluate.compare(
        [CONVERSATIONS[0]],
        {"base": ["Hi."], "tuned": ["Hello! Contact us."]},
        references=["Hello! Contact us."],
        checks={"greets": lambda r: r.startswith("Hello!")},
    )
    assert table.loc[0, "prompt"] == "Hi"
    assert table.loc[0, "base: greets"] == "✗" and table.loc[0, "tuned: greets"] == "✓"
    assert "white-space" in evaluate.styled(table).to_html()


def test_plots_are_saved_as_png(tmp_path):
    result = TrainResult(
        method="lora",
        train_loss=[(1, 2.0), (2, 1.5)],
        eval_loss=[(1, 1.9), (2, 1.7)],
        best_step=2,
        best_eval_loss=1.7,
    )
    plots.plot_loss({"lora": result}, tmp_path / "loss.png")
    plots.plot_bars({"full": 4.8, "lora": 1.9}, tmp_path / "bars.png", ylabel="s/step")
    import pandas as pd

    sweep = pd.DataFrame({"r": [1, 2, 4], "loss": [2.0, 1.8, 1.7], "targets": ["qv"] * 3})
    plots.plot_lines(sweep, "r", "loss", group="targets", path=tmp_path / "sweep.png")
    for name in ("loss.png", "bars.png", "sweep.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_asks_for_procedure_reads_how_to_questions():
    asks = [
        "How do I return something I bought online?",
        "how can i change the email on my account",
        "How do we set that up?",
        "My package says delivered but it's not here. What do I do?",
        "Could you explain how to close my account?",
        "What are the steps to join rewards?",
    ]
    does_not = [
        "Do you ship to Canada?",
        "Can I turn off two-step verification?",  # "two-step" is not "steps"
        "How long do refunds take?",
        "What's your phone number?",
    ]
    assert all(evaluate.asks_for_procedure(q) for q in asks)
    assert not any(evaluate.asks_for_procedure(q) for q in does_not)


def test_has_numbered_steps_needs_one_and_two_on_their_own_lines():
    steps = "Hello! Here's how:\n1. Go to Account.\n2. Click Addresses.\nPlease contact us."
    assert evaluate.has_numbered_steps(steps)
    assert evaluate.has_numbered_steps("Hello!\n  1. One\n  2. Two")  # indented lines count
    assert not evaluate.has_numbered_steps("Hello! 1. Go to Account. 2. Click Addresses.")
    assert not evaluate.has_numbered_steps("Hello!\n1. Only one step.\nContact us.")
    assert not evaluate.has_numbered_steps("Hello!\n2. Two\n1. One")  # 2 must follow 1
    assert not evaluate.has_numbered_steps("Hello! Orders over $50\n1.5 days")


def test_style_adherence_checks_steps_only_where_a_procedure_is_asked():
    steps = "Hello! Here's how:\n1. Go to Account.\n2. Click Addresses.\nPlease contact us."
    assert evaluate.style_adherence("How do I update my address?", steps) == {
        "starts Hello!": True,
        "numbered steps": True,
        "ends contact us": True,
    }
    plain = "Hello! Yes, we ship to Canada. Feel free to contact us."
    assert evaluate.style_adherence("Do you ship to Canada?", plain) == {
        "starts Hello!": True,
        "ends contact us": True,
    }
    assert evaluate.style_adherence("How do I update my address?", "Sure, go to Account.") == {
        "starts Hello!": False,
        "numbered steps": False,
        "ends contact us": False,
    }
    assert set(evaluate.style_adherence("How do I?", steps)) == set(evaluate.STYLE_CHECKS)


def test_procedure_rule_agrees_with_the_sample_data():
    """The rule asks for steps where the sample's answers mostly give them."""
    from helpers.data import load_examples
    from helpers.paths import sample_path

    asked, answered = [], []
    for example in load_examples(sample_path("customer_service")):
        messages = example["messages"]
        for before, message in zip(messages, messages[1:], strict=False):
            if message["role"] == "assistant":
                asked.append(evaluate.asks_for_procedure(before["content"]))
                answered.append(evaluate.has_numbered_steps(message["content"]))
    agreement = sum(a == b for a, b in zip(asked, answered, strict=True)) / len(asked)
    precision = sum(a and b for a, b in zip(asked, answered, strict=True)) / sum(asked)
    assert agreement > 0.85 and precision > 0.9
