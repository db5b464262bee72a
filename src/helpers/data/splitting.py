"""Seeded train/validation/test splits, in memory or from file to files."""

from __future__ import annotations

import math
import os
import random
from pathlib import Path

from helpers.data.jsonl import write_jsonl
from helpers.data.validation import load_examples

SPLIT_NAMES = ("train", "validation", "test")


def _check_ratios(ratios) -> tuple[float, float, float]:
    """Return the three split ratios, or raise ValueError saying what is wrong."""
    ratios = tuple(ratios)
    if len(ratios) != 3:
        raise ValueError(f"ratios must be three numbers (train, validation, test), got {ratios}")
    if any(not isinstance(r, int | float) or not math.isfinite(r) or r < 0 for r in ratios):
        raise ValueError(f"ratios must be non-negative numbers, got {ratios}")
    if abs(sum(ratios) - 1) > 1e-6:
        raise ValueError(f"ratios must sum to 1, got {ratios} (sum {sum(ratios):g})")
    return ratios


def _split_sizes(n: int, ratios: tuple[float, float, float]) -> list[int]:
    """Round ``n * ratio`` to sizes that sum to ``n``; each non-zero ratio gets one if it can."""
    exact = [round(n * r, 9) for r in ratios]
    sizes = [math.floor(x) for x in exact]
    by_remainder = sorted(range(3), key=lambda i: (-(exact[i] - sizes[i]), i))
    for i in by_remainder[: n - sum(sizes)]:
        sizes[i] += 1
    for i in sorted(range(3), key=lambda i: -ratios[i]):
        largest = max(range(3), key=lambda j: sizes[j])
        if ratios[i] > 0 and sizes[i] == 0 and sizes[largest] > 1:
            sizes[largest] -= 1
            sizes[i] = 1
    return sizes


def split(examples: list, ratios=(0.8, 0.1, 0.1), seed: int = 0) -> tuple[list, list, list]:
    """Shuffle with ``random.Random(seed)`` and cut into (train, validation, test)."""
    ratios = _check_ratios(ratios)
    order = list(examples)
    random.Random(seed).shuffle(order)
    train, validation, _ = _split_sizes(len(order), ratios)
    return order[:train], order[train : train + validation], order[train + validation :]


def split_file(
    path: str | os.PathLike, out_dir: str | os.PathLike, ratios=(0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, Path]:
    """Split a file's valid examples into train/validation/test JSONL files in ``out_dir``."""
    parts = split(load_examples(path), ratios, seed)
    return {
        name: write_jsonl(part, Path(out_dir) / f"{name}.jsonl")
        for name, part in zip(SPLIT_NAMES, parts, strict=True)
    }
