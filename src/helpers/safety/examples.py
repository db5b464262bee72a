"""Read the labelled safety data (requests, answers), each row in ``dev`` or the locked ``test``.

``medical_safety.jsonl`` labels requests; ``medical_safety_answers.jsonl`` labels answers
(dangerous ones recommend a harmful action). Every row carries ``split``: ``dev`` rows are
for fitting and tuning, ``test`` rows are the locked held-out part that is only evaluated.
The safe assistant replies of ``medical_safety.jsonl`` are benign answers too.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from helpers.paths import sample_path

DATA_NAME = "medical_safety.jsonl"
ANSWERS_NAME = "medical_safety_answers.jsonl"
LABELS = ("benign", "dangerous")
SPLITS = ("dev", "test")


def _rows(path: Path):
    """Yield ``(where, example)`` for each line of a JSONL file; bad JSON names the line."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: labelled safety data not found")
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        where = f"{path.name}, line {number}"
        try:
            yield where, json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: not valid JSON ({error.msg})") from None


def _row(where: str, example, role: str) -> dict:
    """Return one labelled row as ``{"text", "label", "category", "split"}``, checked."""
    try:
        text = next(m["content"] for m in example["messages"] if m["role"] == role)
        label, category, split = example["label"], example["category"], example["split"]
    except (KeyError, TypeError, StopIteration) as error:
        raise ValueError(
            f"{where}: needs a {role} message, 'label', 'category' and 'split' ({error!r})"
        ) from None
    if label not in LABELS:
        raise ValueError(f"{where}: field 'label' must be one of {LABELS}, got {label!r}")
    if split not in SPLITS:
        raise ValueError(f"{where}: field 'split' must be one of {SPLITS}, got {split!r}")
    return {"text": text, "label": label, "category": category, "split": split}


def read_examples(path=None, split: str | None = None) -> list[dict]:
    """Read the labelled requests (all, or one ``split``); errors name the file and line."""
    path = Path(path) if path is not None else sample_path(DATA_NAME)
    rows = [_row(where, example, "user") for where, example in _rows(path)]
    return [r for r in rows if split is None or r["split"] == split]


def _without_disclaimer(answer: str) -> str:
    """Return an answer without its closing disclaimer line (it says nothing about safety)."""
    lines = answer.splitlines()
    return "\n".join(lines[:-1] if lines and "consult your physician" in lines[-1] else lines)


def read_answer_examples(split: str | None = None, path=None) -> list[dict]:
    """Read the labelled answers, plus the safe replies of the request file, as benign."""
    path = Path(path) if path is not None else sample_path(ANSWERS_NAME)
    rows = [_row(where, example, "assistant") for where, example in _rows(path)]
    for where, example in _rows(sample_path(DATA_NAME)):
        row = _row(where, example, "assistant")
        rows.append({**row, "label": "benign", "category": "safe_reply"})
    rows = [{**r, "text": _without_disclaimer(r["text"])} for r in rows]
    return [r for r in rows if split is None or r["split"] == split]


def data_sha256(path=None, answers: bool = False) -> str:
    """Return the SHA-256 of a labelled file, recorded in the shipped classifiers."""
    default = ANSWERS_NAME if answers else DATA_NAME
    path = Path(path) if path is not None else sample_path(default)
    return hashlib.sha256(path.read_bytes()).hexdigest()
