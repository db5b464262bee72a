"""Tokenisation: assistant-only labels, the end-of-turn label, prompts, truncation, packing."""

import pytest
import torch

from helpers.chat import (
    IGNORE_INDEX,
    ensure_chat_template,
    make_collator,
    render_prompt,
    tokenize_conversation,
    tokenize_dataset,
)

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
