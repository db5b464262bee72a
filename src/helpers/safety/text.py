"""Text handling shared by the safety checks: normalising, sentences, argument checks."""

from __future__ import annotations

import re
import unicodedata


def normalise(text: str) -> str:
    """Fold Unicode look-alikes, curly quotes and runs of whitespace, for the rules."""
    text = unicodedata.normalize("NFKC", text).replace("\u2019", "'").replace("\u2018", "'")
    return re.sub(r"\s+", " ", text).strip()


def sentences(text: str) -> list[str]:
    """Split an answer into sentences and lines."""
    return [s for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]


def check_text(text, name: str) -> str:
    """Return ``text`` if it is a string, else raise a TypeError naming the argument."""
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a string, got {type(text).__name__}")
    return text
