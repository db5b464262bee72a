"""Losses of chat data: a split's mean per assistant token, and each example's own sum."""

from __future__ import annotations

import math

import numpy as np
import torch

from helpers.chat import IGNORE_INDEX, make_collator, tokenize_dataset
from helpers.models import autocast


def model_device(model) -> torch.device:
    """Return the device of the model's first parameter."""
    return next(model.parameters()).device


MODEL_INPUTS = ("input_ids", "attention_mask", "labels")


def virtual_tokens(model) -> int:
    """Return how many learned vectors a PEFT prompt-tuned model puts before each input (or 0)."""
    config = getattr(model, "active_peft_config", None)
    return config.num_virtual_tokens if getattr(config, "is_prompt_learning", False) else 0


def _scored_positions(model, tokenizer, examples, batch_size, max_seq_length, bf16):
    """Yield per batch each scored position's loss, whether it was trained and right, and its row.

    The collator marks the positions whose next token is trained: only those are scored,
    since the prompt's logits over the 49k vocabulary would cost memory and time for nothing.
    One device here (no DataParallel), so the trained positions always come as shift_labels.
    A padding position added to round the count has target -100: loss 0, not trained.
    """
    if isinstance(examples, list):
        examples, _ = tokenize_dataset(examples, tokenizer, max_seq_length)
    collate = make_collator(tokenizer, pad_to_multiple_of=32, trained_logits_only=True)
    device = model_device(model)
    for start in range(0, len(examples), batch_size):
        rows = [examples[i] for i in range(start, min(start + batch_size, len(examples)))]
        batch = collate([{key: row[key] for key in MODEL_INPUTS if key in row} for row in rows])
        batch = {key: value.to(device) for key, value in batch.items()}
        del batch["labels"]
        targets = batch.pop("shift_labels")
        example_of = batch["logits_to_keep"].nonzero()[:, 0].cpu() + start  # row-major order
        if prompt := virtual_tokens(model):  # learned vectors come first: never scored
            keep = batch["logits_to_keep"]
            batch["logits_to_keep"] = torch.cat([keep.new_zeros(len(keep), prompt), keep], 1)
        with autocast(device.type, bf16):
            logits = model(**batch, use_cache=False).logits.float()
        losses = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
        trained = targets != IGNORE_INDEX
        right = (logits.argmax(-1) == targets) & trained
        yield losses.cpu(), trained.cpu(), right.cpu(), example_of


@torch.no_grad()
def mean_loss(
    model,
    tokenizer,
    examples,
    batch_size: int = 8,
    max_seq_length: int = 512,
    bf16: bool | None = None,
) -> dict:
    """Return the loss, next-token accuracy and count of the assistant tokens of a data set.

    ``examples`` are chat examples (tokenised here) or an already tokenised Dataset with
    ``input_ids`` and assistant-only ``labels``. ``loss`` is the mean over assistant tokens
    (each token counts once, however the examples are batched), ``accuracy`` the share of
    them the model predicts with its top (argmax) token, ``perplexity`` is ``exp(loss)``.
    """
    was_training = model.training
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    scored = _scored_positions(model, tokenizer, examples, batch_size, max_seq_length, bf16)
    for losses, trained, right, _ in scored:
        loss_sum += float(losses.sum())
        correct += int(right.sum())
        count += int(trained.sum())
    model.train(was_training)
    loss = loss_sum / max(count, 1)
    return {
        "loss": loss,
        "accuracy": correct / max(count, 1),
        "perplexity": math.exp(min(loss, 50)),
        "tokens": count,
    }


@torch.no_grad()
def example_losses(
    model,
    tokenizer,
    examples,
    batch_size: int = 8,
    max_seq_length: int = 512,
    bf16: bool | None = None,
) -> np.ndarray:
    """Per example, the summed loss over its assistant tokens and their count: an n x 2 array.

    The rows give paired comparisons of two models on the same examples (a noise band per
    example); ``rows[:, 0].sum() / rows[:, 1].sum()`` is :func:`mean_loss`'s loss. The
    examples are scored in batches, each row only over its own tokens.
    """
    was_training = model.training
    model.eval()
    sums = torch.zeros(len(examples), dtype=torch.float64)
    tokens = torch.zeros(len(examples), dtype=torch.float64)
    scored = _scored_positions(model, tokenizer, examples, batch_size, max_seq_length, bf16)
    for losses, trained, _, example_of in scored:
        sums.index_add_(0, example_of, losses.double())
        tokens.index_add_(0, example_of, trained.double())
    model.train(was_training)
    return torch.stack([sums, tokens], 1).numpy()
