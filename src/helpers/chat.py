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

from helpers.data import plain_messages
from helpers.models import data_parallel_gpus, ensure_chat_template

IGNORE_INDEX = -100
_REPLY_MARK = "\ue000reply\ue000"  # stands in for a reply to find where the template puts it


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(
        plain_messages(messages), tokenize=False, add_generation_prompt=add_generation_prompt
    )


def render_prompt(tokenizer, messages: list[dict]) -> str:
    """Render the prompt for the next assistant turn exactly as training renders it."""
    return _render(tokenizer, messages, add_generation_prompt=True)


def prompt_messages(messages: list[dict]) -> list[dict]:
    """Return a conversation without its final assistant reply (what the model is asked)."""
    return messages[:-1] if messages and messages[-1]["role"] == "assistant" else messages


def _prompt_before(tokenizer, messages: list[dict], index: int) -> str:
    """Return the rendered text that comes before the reply ``messages[index]``.

    That is the generation prompt of the conversation so far; when the assistant speaks
    first there is no conversation to render, so the template's text before a marker
    reply is used (it includes a default system prompt, if the template adds one).
    """
    if index > 0:
        return _render(tokenizer, messages[:index], add_generation_prompt=True)
    marked = _render(tokenizer, [{"role": "assistant", "content": _REPLY_MARK}])
    return marked.partition(_REPLY_MARK)[0]


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
        prompt = _prompt_before(tokenizer, messages, index)
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
    """Return the decoded tokens of a tokenised row with the trained ones inside ⟦ ⟧.

    Each run of trained (or untrained) tokens is decoded at once: a character the tokenizer
    splits over several tokens, such as the disclaimer's ⚠️, prints whole, not as �.
    """
    pieces, run, trained = [], [], False
    for token, label in zip(row["input_ids"], row["labels"], strict=True):
        if (label != IGNORE_INDEX) != trained:
            pieces += [tokenizer.decode(run), "⟧" if trained else "⟦"]
            run, trained = [], not trained
        run.append(token)
    return "".join(pieces) + tokenizer.decode(run) + ("⟧" if trained else "")


@dataclass
class TokenizationReport:
    """What tokenisation did: sizes, trained tokens, truncations and dropped examples.

    ``examples`` counts the examples given; the token counts describe the dataset, which
    leaves out the examples with nothing to train on (``dropped_lines``, 1-based).
    """

    examples: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    truncated: int = 0
    truncated_lines: list[int] = field(default_factory=list)
    without_labels: int = 0
    dropped_lines: list[int] = field(default_factory=list)
    max_seq_length: int = 0

    def __str__(self) -> str:
        text = (
            f"{self.examples} examples, {self.tokens} tokens, {self.trained_tokens} trained "
            f"(assistant) tokens; {self.truncated} truncated to {self.max_seq_length} tokens"
        )
        if self.truncated:
            text += f" (examples {self.truncated_lines[:10]})"
        if self.dropped_lines:
            text += (
                f"; {len(self.dropped_lines)} dropped, with nothing to train on "
                f"(examples {self.dropped_lines[:10]})"
            )
        return text


def _numbers(lines: list[int], shown: int = 10) -> str:
    """Return example numbers as "2, 5, 9": the first ``shown`` of them, then how many more."""
    head = ", ".join(map(str, lines[:shown]))
    return head + (f" and {len(lines) - shown} more" if len(lines) > shown else "")


def tokenize_dataset(examples: list[dict], tokenizer, max_seq_length: int = 512):
    """Tokenise chat examples into a ``datasets.Dataset``; return it with a TokenizationReport.

    Nothing is silent: the report counts the examples cut at ``max_seq_length``, and
    examples left with no trained token (every reply ``weight: 0``, or cut away) are
    dropped with a warning, since a batch of them would make the loss 0/0. Raises
    ValueError when no example is left.
    """
    from datasets import Dataset

    ensure_chat_template(tokenizer)
    report = TokenizationReport(max_seq_length=max_seq_length)
    rows = []
    for number, example in enumerate(examples, start=1):
        row = tokenize_conversation(tokenizer, example["messages"], max_seq_length)
        trained = sum(label != IGNORE_INDEX for label in row["labels"])
        report.examples += 1
        if row.pop("truncated"):
            report.truncated += 1
            report.truncated_lines.append(number)
        if trained == 0:
            report.without_labels += 1
            report.dropped_lines.append(number)
            continue
        report.tokens += len(row["input_ids"])
        report.trained_tokens += trained
        rows.append(row)
    _warn(report)
    return Dataset.from_list(rows), report


class NothingToTrainError(ValueError):
    """No example keeps a token to train on (weights 0, or max_seq_length cut every reply)."""


def _warn(report: TokenizationReport) -> None:
    """Warn about truncated and dropped examples; raise NothingToTrainError when none is left."""
    why = (
        "every assistant reply has weight 0, or truncation at "
        f"max_seq_length={report.max_seq_length} cut all of them"
    )
    if report.dropped_lines and len(report.dropped_lines) == report.examples:
        raise NothingToTrainError(
            f"None of the {report.examples} examples has anything to train on: {why}."
        )
    if report.truncated:
        warnings.warn(
            f"{report.truncated} of {report.examples} examples were truncated to "
            f"{report.max_seq_length} tokens; raise max_seq_length to keep them whole.",
            stacklevel=3,
        )
    if report.dropped_lines:
        warnings.warn(
            f"{len(report.dropped_lines)} of {report.examples} examples have nothing to train "
            f"on ({why}) and were dropped: examples {_numbers(report.dropped_lines)}.",
            stacklevel=3,
        )


def next_token_targets(labels, multiple: int | None = None):
    """Return ``(keep, targets)``: where the next token is trained (a B x T mask), and those tokens.

    Position ``t`` predicts token ``t + 1``, so ``keep[b, t]`` is True when ``labels[b, t + 1]``
    is trained; ``targets`` lists those labels in the same order as ``hidden[keep]``. With
    ``multiple``, untrained positions (target -100, ignored by the loss) are added from the
    end until the count is a multiple of it: a few matrix shapes instead of one per batch.
    """
    import torch

    shifted = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    keep = shifted != IGNORE_INDEX
    extra = -int(keep.sum()) % multiple if multiple else 0
    if extra:
        spare = (~keep).flatten().nonzero().flatten()[-extra:]
        keep.view(-1)[spare] = True
    return keep, shifted[keep]


@dataclass
class TrainedLogitsCollator:
    """Wraps a collator so that the model computes logits only where a trained token follows.

    It adds ``logits_to_keep`` (a boolean mask: Transformers then projects only those
    hidden states onto the 49k-token vocabulary) and the matching ``shift_labels`` for
    the loss. The loss is the same; the prompt's positions, which no label follows, skip
    the largest matrix multiply of the model and its softmax. The count of kept positions
    is rounded up to ``pad_to_multiple_of`` per row: on a CPU, oneDNN keeps memory for
    every new matrix shape it sees (notebook 02 measured it for sequence lengths).
    """

    collator: object
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict]) -> dict:
        batch = self.collator(features)
        labels = batch["labels"]
        multiple = self.pad_to_multiple_of * labels.shape[0] if self.pad_to_multiple_of else None
        batch["logits_to_keep"], batch["shift_labels"] = next_token_targets(labels, multiple)
        return batch


def make_collator(
    tokenizer,
    packing: bool = False,
    pad_to_multiple_of: int | None = None,
    trained_logits_only: bool | None = None,
):
    """Return a Transformers collator: dynamic padding per batch, or packing without padding.

    Padding pads labels with -100 by position (``DataCollatorForSeq2Seq``); packing
    concatenates the batch into one row whose position ids restart at every example,
    so attention stays inside each example (``DataCollatorWithFlattening``). With
    ``trained_logits_only`` the batch also tells the model to compute logits only where
    they are trained (:class:`TrainedLogitsCollator`; for models that take
    ``logits_to_keep``, as every decoder-only model in Transformers does). By default it
    does, except where Trainer would split batches with DataParallel (two or more GPUs in
    one process): DataParallel splits ``logits_to_keep`` by rows but ``shift_labels`` in
    flat chunks, so the plain collator is returned, with a warning saying what to run.
    """
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

    if trained_logits_only is None:
        gpus = data_parallel_gpus()
        trained_logits_only = not gpus
        if gpus:
            _warn_data_parallel(gpus)

    if packing:
        collator = DataCollatorWithFlattening(separator_id=IGNORE_INDEX)
    else:
        tokenizer.padding_side = "right"  # training positions count from the first real token
        collator = DataCollatorForSeq2Seq(
            tokenizer,
            padding=True,
            label_pad_token_id=IGNORE_INDEX,
            pad_to_multiple_of=pad_to_multiple_of,
            return_tensors="pt",
        )
    if not trained_logits_only:
        return collator
    return TrainedLogitsCollator(collator, pad_to_multiple_of)


def _warn_data_parallel(gpus: int) -> None:
    """Warn that DataParallel's split batches get logits at every position, and what to run."""
    warnings.warn(
        f"{gpus} GPUs in one process: Trainer splits each batch across them with DataParallel, "
        "which cannot split the trained-logits batch (logits_to_keep by rows, shift_labels in "
        "flat chunks), so logits are computed at every position instead (slower, more memory). "
        f"To train on all {gpus} GPUs at full speed start one process per GPU: torchrun "
        f"--nproc_per_node {gpus} -m helpers train CONFIG (accelerate launch for a script); "
        "for one GPU set CUDA_VISIBLE_DEVICES=0.",
        stacklevel=3,
    )
