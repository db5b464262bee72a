"""Conversations to tokens: chat-template rendering, assistant-only labels, collators.

The model learns to *answer*, not to repeat prompts: labels are -100 everywhere
except on the assistant's replies and their end-of-turn token. Padding is masked by
position, never by token id, because SmolLM2's pad token *is* its end-of-turn token
``<|im_end|>``: masking every pad id would also mask the end-of-turn labels, and the
fine-tuned model would never learn to stop.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

IGNORE_INDEX = -100

# A ChatML template for base models that ship without one (e.g. Llama-2 base).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def ensure_chat_template(tokenizer) -> None:
    """Give a tokenizer without a chat template a ChatML one that ends turns with its EOS token."""
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    return tokenizer.apply_chat_template(
        plain, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def render_prompt(tokenizer, messages: list[dict]) -> str:
    """Render the prompt for the next assistant turn exactly as training renders it."""
    return _render(tokenizer, messages, add_generation_prompt=True)


def prompt_messages(messages: list[dict]) -> list[dict]:
    """Return a conversation without its final assistant reply (what the model is asked)."""
    return messages[:-1] if messages and messages[-1]["role"] == "assistant" else messages


def assistant_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """Render a conversation; return the text and the character spans of the trained replies.

    A span covers the reply and its end-of-turn token; replies with ``weight: 0`` get none.
    """
    text = _render(tokenizer, messages)
    end_of_turn = tokenizer.eos_token
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant" or message.get("weight", 1) == 0:
            continue
        prompt = _render(tokenizer, messages[:index], add_generation_prompt=True)
        through_reply = _render(tokenizer, messages[: index + 1])
        if not (text.startswith(through_reply) and through_reply.startswith(prompt)):
            raise ValueError(
                "The chat template does not render conversations incrementally, so the "
                "assistant replies cannot be located for assistant-only labels."
            )
        reply = through_reply[len(prompt) :]
        end = reply.rfind(end_of_turn)
        end = end + len(end_of_turn) if end >= 0 else len(reply.rstrip())
        spans.append((len(prompt), len(prompt) + end))
    return text, spans


def tokenize_conversation(tokenizer, messages: list[dict], max_seq_length: int) -> dict:
    """Return ``input_ids``, ``attention_mask``, ``labels`` (assistant-only) and ``truncated``."""
    text, spans = assistant_spans(tokenizer, messages)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = encoding["input_ids"]
    labels = [IGNORE_INDEX] * len(input_ids)
    for position, (start, _end) in enumerate(encoding["offset_mapping"]):
        if any(span_start <= start < span_end for span_start, span_end in spans):
            labels[position] = input_ids[position]
    truncated = len(input_ids) > max_seq_length
    input_ids, labels = input_ids[:max_seq_length], labels[:max_seq_length]
    return {
        "input_ids": input_ids,
        "attention_mask": [1] * len(input_ids),
        "labels": labels,
        "truncated": truncated,
    }


def show_labels(tokenizer, row: dict) -> str:
    """Return the decoded tokens of a tokenised row with the trained ones inside ⟦ ⟧."""
    pieces, trained = [], False
    for token, label in zip(row["input_ids"], row["labels"], strict=True):
        if (label != IGNORE_INDEX) != trained:
            trained = not trained
            pieces.append("⟦" if trained else "⟧")
        pieces.append(tokenizer.decode([token]))
    return "".join(pieces) + ("⟧" if trained else "")


@dataclass
class TokenizationReport:
    """What tokenisation did to a dataset: sizes, trained tokens and truncations."""

    examples: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    truncated: int = 0
    truncated_lines: list[int] = field(default_factory=list)
    without_labels: int = 0
    max_seq_length: int = 0

    def __str__(self) -> str:
        text = (
            f"{self.examples} examples, {self.tokens} tokens, {self.trained_tokens} trained "
            f"(assistant) tokens; {self.truncated} truncated to {self.max_seq_length} tokens"
        )
        if self.truncated:
            text += f" (examples {self.truncated_lines[:10]})"
        if self.without_labels:
            text += f"; {self.without_labels} with nothing left to train on"
        return text


def tokenize_dataset(examples: list[dict], tokenizer, max_seq_length: int = 512):
    """Tokenise chat examples into a ``datasets.Dataset``; return it with a TokenizationReport.

    Truncation is never silent: the report counts the examples cut at ``max_seq_length``.
    """
    from datasets import Dataset

    ensure_chat_template(tokenizer)
    report = TokenizationReport(max_seq_length=max_seq_length)
    rows = []
    for number, example in enumerate(examples, start=1):
        row = tokenize_conversation(tokenizer, example["messages"], max_seq_length)
        trained = sum(label != IGNORE_INDEX for label in row["labels"])
        report.examples += 1
        report.tokens += len(row["input_ids"])
        report.trained_tokens += trained
        if row.pop("truncated"):
            report.truncated += 1
            report.truncated_lines.append(number)
        if trained == 0:
            report.without_labels += 1
        rows.append(row)
    if report.truncated:
        warnings.warn(
            f"{report.truncated} of {report.examples} examples were truncated to "
            f"{max_seq_length} tokens; raise max_seq_length to keep them whole.",
            stacklevel=2,
        )
    dataset = Dataset.from_list(rows)
    return dataset, report


def make_collator(tokenizer, packing: bool = False, pad_to_multiple_of: int | None = None):
    """Return a Transformers collator: dynamic padding per batch, or packing without padding.

    Padding pads labels with -100 by position (``DataCollatorForSeq2Seq``); packing
    concatenates the batch into one row whose position ids restart at every example,
    so attention stays inside each example (``DataCollatorWithFlattening``).
    """
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

    if packing:
        return DataCollatorWithFlattening(separator_id=IGNORE_INDEX)
    tokenizer.padding_side = "right"  # training positions count from the first real token
    return DataCollatorForSeq2Seq(
        tokenizer,
        padding=True,
        label_pad_token_id=IGNORE_INDEX,
        pad_to_multiple_of=pad_to_multiple_of,
        return_tensors="pt",
    )
