"""Tokenisation: assistant-only labels, the end-of-turn label, prompts, truncation, packing."""

import copy
import warnings

import pytest
import torch

from helpers import chat, models
from helpers.chat import (
    IGNORE_INDEX,
    NothingToTrainError,
    make_collator,
    render_prompt,
    tokenize_conversation,
    tokenize_dataset,
)
from helpers.models import ensure_chat_template

SYSTEM = {"role": "system", "content": "You are the customer-service assistant for XYZ Corp."}
SINGLE = [
    SYSTEM,
    {"role": "user", "content": "How do I return a product?"},
    {
        "role": "assistant",
        "content": "Hello! Open your orders page.\n1. Pick the item\n"
        "2. Print the label\nFeel free to contact us!",
    },
]
MULTI = [
    SYSTEM,
    {"role": "user", "content": "Where is my order?"},
    {"role": "assistant", "content": "Hello! It ships tomorrow.", "weight": 0},
    {"role": "user", "content": "And the refund?"},
    {"role": "assistant", "content": "Hello! Refunds take 5-7 days. Please contact us."},
    {"role": "user", "content": "Thanks."},
    {"role": "assistant", "content": "Hello! You are welcome; contact us anytime."},
]


def labelled_text(tokenizer, row) -> list[str]:
    """Decode each contiguous run of labelled tokens."""
    runs, current = [], []
    for token, label in zip(row["input_ids"], row["labels"], strict=True):
        if label == IGNORE_INDEX:
            if current:
                runs.append(tokenizer.decode(current))
            current = []
        else:
            assert label == token
            current.append(token)
    if current:
        runs.append(tokenizer.decode(current))
    return runs


def test_labels_are_exactly_the_assistant_reply_and_its_end_of_turn(tokenizer):
    row = tokenize_conversation(tokenizer, SINGLE, max_seq_length=512)
    assert labelled_text(tokenizer, row) == [SINGLE[-1]["content"] + "<|im_end|>"]
    assert not row["truncated"]


def test_show_labels_marks_the_trained_runs_and_keeps_split_characters_whole(tokenizer):
    reply = "Rest and drink water.\n⚠️ These are general guidelines."
    conversation = [*SINGLE[:2], {"role": "assistant", "content": reply}]
    row = tokenize_conversation(tokenizer, conversation, max_seq_length=512)
    shown = chat.show_labels(tokenizer, row)
    assert f"⟦{reply}<|im_end|>⟧" in shown and "\ufffd" not in shown
    assert shown.replace("⟦", "").replace("⟧", "") == tokenizer.decode(row["input_ids"])


def test_multi_turn_labels_skip_weight_zero_turns(tokenizer):
    row = tokenize_conversation(tokenizer, MULTI, max_seq_length=512)
    assert labelled_text(tokenizer, row) == [
        MULTI[4]["content"] + "<|im_end|>",
        MULTI[6]["content"] + "<|im_end|>",
    ]


def test_end_of_turn_label_survives_padding(tokenizer):
    """The pad id *is* <|im_end|>: padding must be masked by position, not by id."""
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    short = tokenize_conversation(tokenizer, SINGLE, 512)
    long = tokenize_conversation(tokenizer, MULTI, 512)
    batch = make_collator(tokenizer)(
        [
            {k: v for k, v in short.items() if k != "truncated"},
            {k: v for k, v in long.items() if k != "truncated"},
        ]
    )
    n = len(short["input_ids"])
    assert batch["input_ids"].shape[1] == len(long["input_ids"]) > n
    labels, mask = batch["labels"][0], batch["attention_mask"][0]
    # The last labelled token of the short example is its end-of-turn token...
    last = int((labels != IGNORE_INDEX).nonzero().max())
    assert labels[last] == tokenizer.eos_token_id and mask[last] == 1
    # ...and every padded position (same id!) is masked out of both loss and attention.
    assert (batch["input_ids"][0, n:] == tokenizer.pad_token_id).all()
    assert (labels[n:] == IGNORE_INDEX).all() and (mask[n:] == 0).all()


def test_training_and_inference_render_the_prompt_identically(tokenizer):
    for conversation in (SINGLE, MULTI):
        row = tokenize_conversation(tokenizer, conversation, 512)
        prompt = render_prompt(tokenizer, conversation[:-1])
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        assert row["input_ids"][: len(prompt_ids)] == prompt_ids
        assert row["labels"][len(prompt_ids) - 1] == IGNORE_INDEX
        assert row["labels"][len(prompt_ids)] == row["input_ids"][len(prompt_ids)]
        assert prompt.endswith("<|im_start|>assistant\n")


def test_truncation_is_counted_and_reported(tokenizer):
    short = len(tokenize_conversation(tokenizer, SINGLE, 512)["input_ids"])
    examples = [{"messages": SINGLE}, {"messages": MULTI}, {"messages": MULTI}]
    with pytest.warns(UserWarning, match="2 of 3 examples were truncated"):
        dataset, report = tokenize_dataset(examples, tokenizer, max_seq_length=short)
    assert report.truncated == 2 and report.truncated_lines == [2, 3]
    assert max(len(ids) for ids in dataset["input_ids"]) == short
    _, whole = tokenize_dataset(examples, tokenizer, 512)
    assert whole.truncated == 0 and whole.tokens > report.tokens


def test_packing_keeps_examples_separate(tiny):
    model, tokenizer = tiny
    rows = [tokenize_conversation(tokenizer, c, 512) for c in (SINGLE, MULTI)]
    features = [{k: v for k, v in r.items() if k != "truncated"} for r in rows]
    packed = make_collator(tokenizer, packing=True)(features)
    lengths = [len(r["input_ids"]) for r in rows]
    assert packed["input_ids"].shape == (1, sum(lengths))
    assert packed["position_ids"][0, lengths[0]] == 0  # positions restart per example
    model.eval()
    with torch.no_grad():
        # As in training (Trainer turns the KV cache off): packed rows are found from positions.
        together = model(
            input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False
        ).logits[0]
        alone = [model(input_ids=torch.tensor([r["input_ids"]])).logits[0] for r in rows]
    # Attention stays inside each example: packed logits equal the separate runs.
    torch.testing.assert_close(together, torch.cat(alone), atol=1e-4, rtol=1e-4)


def test_base_models_without_a_template_get_chatml(tokenizer):
    from copy import deepcopy

    bare = deepcopy(tokenizer)
    bare.chat_template = None
    ensure_chat_template(bare)
    row = tokenize_conversation(bare, SINGLE, 512)
    assert labelled_text(bare, row) == [SINGLE[-1]["content"] + bare.eos_token]


def test_tokenizer_set_up_has_one_home(tokenizer):
    bare = copy.deepcopy(tokenizer)
    bare.chat_template, bare.pad_token = None, None
    models.ensure_chat_template(bare)
    assert bare.chat_template == models.CHATML_TEMPLATE and bare.pad_token == bare.eos_token


# --- a conversation the assistant opens -------------------------------------------------------

OPENER = [
    {"role": "assistant", "content": "Hello! Welcome to XYZ Corp. How can I help?"},
    {"role": "user", "content": "Where is my order?"},
    {"role": "assistant", "content": "Hello! It ships tomorrow. Please contact us."},
]


def test_an_assistant_opener_trains_with_the_default_system_prompt(tokenizer):
    row = tokenize_conversation(tokenizer, OPENER, 512)
    text = tokenizer.decode(row["input_ids"])
    assert text == tokenizer.apply_chat_template(OPENER, tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert labelled_text(tokenizer, row) == [
        OPENER[0]["content"] + "<|im_end|>",
        OPENER[2]["content"] + "<|im_end|>",
    ]


def test_an_assistant_opener_with_the_tiny_models_tokenizer_and_chatml(tiny):
    model, tiny_tokenizer = tiny
    bare = copy.deepcopy(tiny_tokenizer)
    bare.chat_template = None
    ensure_chat_template(bare)  # ChatML: no default system prompt
    for tok in (tiny_tokenizer, bare):
        dataset, report = tokenize_dataset([{"messages": OPENER}, {"messages": SINGLE}], tok)
        assert report.dropped_lines == [] and len(dataset) == 2
        row = dataset[0]
        assert labelled_text(tok, row) == [m["content"] + tok.eos_token for m in OPENER[::2]]
        with torch.no_grad():
            loss = model(
                torch.tensor([row["input_ids"]]), labels=torch.tensor([row["labels"]])
            ).loss
        assert torch.isfinite(loss)
    assert tok.decode(row["input_ids"]).startswith("<|im_start|>assistant\n" + OPENER[0]["content"])


# --- rows with nothing to train on ------------------------------------------------------------

SILENT = [
    SYSTEM,
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!", "weight": 0},
]


def test_rows_with_nothing_to_train_on_are_dropped_with_one_warning(tokenizer):
    examples = [
        {"messages": SINGLE},
        {"messages": SILENT},
        {"messages": MULTI},
        {"messages": SILENT},
    ]
    with pytest.warns(UserWarning) as caught:
        dataset, report = tokenize_dataset(examples, tokenizer)
    assert [str(w.message) for w in caught if "nothing to train" in str(w.message)] == [
        "2 of 4 examples have nothing to train on (every assistant reply has weight 0, or "
        "truncation at max_seq_length=512 cut all of them) and were dropped: examples 2, 4."
    ]
    assert report.dropped_lines == [2, 4] and report.without_labels == 2 and report.examples == 4
    assert len(dataset) == 2 and all(any(x != IGNORE_INDEX for x in r) for r in dataset["labels"])
    kept = [tokenize_conversation(tokenizer, c, 512) for c in (SINGLE, MULTI)]
    assert dataset["input_ids"] == [r["input_ids"] for r in kept]
    assert report.tokens == sum(len(r["input_ids"]) for r in kept)
    assert "2 dropped, with nothing to train on (examples [2, 4])" in str(report)


def test_truncation_that_cuts_every_reply_drops_the_row(tokenizer):
    prompt = render_prompt(tokenizer, SINGLE[:-1])
    cut = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])  # all prompt, no reply
    shorter = [SYSTEM, {"role": "user", "content": "Hi"}, SINGLE[-1]]  # its reply starts earlier
    examples = [{"messages": SINGLE}, {"messages": shorter}]
    with pytest.warns(UserWarning) as caught:
        dataset, report = tokenize_dataset(examples, tokenizer, max_seq_length=cut)
    truncated, dropped = (str(w.message) for w in caught)
    assert truncated.startswith("2 of 2 examples were truncated")
    assert dropped.startswith("1 of 2 examples have nothing") and dropped.endswith("examples 1.")
    assert report.truncated_lines == [1, 2] and report.dropped_lines == [1] and len(dataset) == 1
    assert report.trained_tokens > 0


def test_no_row_left_to_train_on_is_a_clear_error(tokenizer):
    with pytest.raises(
        NothingToTrainError, match="None of the 2 examples has anything to train on"
    ):
        tokenize_dataset([{"messages": SILENT}] * 2, tokenizer)


def test_a_clean_dataset_gives_no_warning(tokenizer):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dataset, report = tokenize_dataset([{"messages": SINGLE}], tokenizer)
    assert report.dropped_lines == [] and "dropped" not in str(report) and len(dataset) == 1


# --- content given as text parts ------------------------------------------------------------


def test_text_parts_train_as_their_joined_text(tokenizer):
    parts = copy.deepcopy(MULTI)
    parts[0]["content"] = [
        {"type": "text", "text": "You are the assistant"},
        {"type": "text", "text": "for XYZ Corp."},
    ]
    parts[4]["content"] = [{"type": "text", "text": MULTI[4]["content"]}]
    joined = copy.deepcopy(MULTI)
    joined[0]["content"] = "You are the assistant\nfor XYZ Corp."
    assert tokenize_conversation(tokenizer, parts, 512) == tokenize_conversation(
        tokenizer, joined, 512
    )
    assert render_prompt(tokenizer, parts[:4]) == render_prompt(tokenizer, joined[:4])


@pytest.mark.parametrize("packing", [False, True])
def test_trained_logits_only_gives_the_same_loss_and_gradients(tiny, packing):
    """Logits only where a trained token follows: the same loss and gradients, fewer logits."""
    model, tokenizer = tiny
    rows = [tokenize_conversation(tokenizer, c, 512) for c in (SINGLE, MULTI)]
    features = [{k: v for k, v in r.items() if k != "truncated"} for r in rows]
    trained = sum(label != IGNORE_INDEX for r in rows for label in r["labels"])
    model.train()
    results = []
    for only in (False, True):
        batch = make_collator(tokenizer, packing=packing, trained_logits_only=only)(features)
        model.zero_grad()
        output = model(**batch)
        output.loss.backward()
        gradients = [p.grad.clone() for p in model.parameters()]
        results.append((output.loss.detach(), output.logits.shape, gradients))
    (full_loss, full_shape, full_grads), (loss, shape, grads) = results
    assert full_shape[-2] == max(len(r["input_ids"]) for r in rows) or packing
    assert shape == (trained, full_shape[-1])  # one row of logits per trained token
    torch.testing.assert_close(loss, full_loss)
    for gradient, full_gradient in zip(grads, full_grads, strict=True):
        torch.testing.assert_close(gradient, full_gradient, atol=1e-6, rtol=1e-4)


def test_next_token_targets_follow_the_shifted_labels():
    labels = torch.tensor([[-100, -100, 5, 6, -100], [-100, 7, -100, 8, 9]])
    keep, targets = chat.next_token_targets(labels)
    assert keep.tolist() == [
        [False, True, True, False, False],
        [True, False, True, True, False],
    ]
    assert targets.tolist() == [5, 6, 7, 8, 9]


def test_kept_positions_round_up_to_few_shapes_without_changing_the_loss(tiny):
    """Rounded up with untrained positions (target -100): a few matrix shapes, the same loss."""
    model, tokenizer = tiny
    rows = [tokenize_conversation(tokenizer, c, 512) for c in (SINGLE, MULTI)]
    features = [{k: v for k, v in r.items() if k != "truncated"} for r in rows]
    exact = make_collator(tokenizer)(features)
    rounded = make_collator(tokenizer, pad_to_multiple_of=32)(features)
    trained = int(exact["logits_to_keep"].sum())
    kept = int(rounded["logits_to_keep"].sum())
    assert kept % (32 * 2) == 0 and kept > trained  # 32 per row of the batch
    assert (rounded["shift_labels"] != IGNORE_INDEX).sum() == trained
    width = exact["labels"].shape[1]  # every trained position is still kept
    assert rounded["logits_to_keep"][:, :width][exact["logits_to_keep"]].all()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**rounded).loss, model(**exact).loss)


# --- two or more GPUs in one process (DataParallel) ---------------------------------------


def _fake_gpus(monkeypatch, count: int, launched: bool = False) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    if launched:  # torchrun: one process per GPU
        monkeypatch.setenv("LOCAL_RANK", "0")
    else:
        monkeypatch.delenv("LOCAL_RANK", raising=False)


def _features(tokenizer):
    rows = [tokenize_conversation(tokenizer, c, 512) for c in (SINGLE, MULTI)]
    return [{k: v for k, v in r.items() if k != "truncated"} for r in rows]


def test_two_gpus_in_one_process_get_batches_that_dataparallel_can_split(tokenizer, monkeypatch):
    _fake_gpus(monkeypatch, 2)
    with pytest.warns(UserWarning, match="torchrun --nproc_per_node 2 -m helpers train"):
        collate = make_collator(tokenizer, pad_to_multiple_of=32)
    assert not isinstance(collate, chat.TrainedLogitsCollator)
    batch = collate(_features(tokenizer))
    # DataParallel scatters every tensor along its first dimension: all must be per row.
    assert {value.shape[0] for value in batch.values()} == {2}
    assert "shift_labels" not in batch and "logits_to_keep" not in batch
    # What it replaces: shift_labels is one flat list, which DataParallel would cut at the
    # middle of the list, not at the second row's first trained token.
    trained = make_collator(tokenizer, trained_logits_only=True)(_features(tokenizer))
    assert trained["shift_labels"].dim() == 1 and trained["shift_labels"].shape[0] != 2


@pytest.mark.parametrize(("count", "launched"), [(1, False), (2, True), (8, True)])
def test_one_gpu_or_one_process_per_gpu_keeps_the_trained_logits(
    tokenizer, monkeypatch, count, launched
):
    _fake_gpus(monkeypatch, count, launched)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert isinstance(make_collator(tokenizer), chat.TrainedLogitsCollator)
    assert models.data_parallel_gpus() == 0


def test_an_explicit_choice_of_trained_logits_wins_over_the_gpu_count(tokenizer, monkeypatch):
    _fake_gpus(monkeypatch, 2)
    assert models.data_parallel_gpus() == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert isinstance(
            make_collator(tokenizer, trained_logits_only=True), chat.TrainedLogitsCollator
        )
        assert not isinstance(
            make_collator(tokenizer, trained_logits_only=False), chat.TrainedLogitsCollator
        )
