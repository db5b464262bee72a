"""Cleaning: Unicode normalisation, trimmed text, text parts joined, exact duplicates dropped."""

from __future__ import annotations

import copy
import unicodedata

from helpers.data.content import content_text
from helpers.data.jsonl import _canonical


def clean(
    examples: list[dict], normalize: str | None = "NFC", dedupe: bool = True
) -> tuple[list[dict], list[str]]:
    """Normalise Unicode, trim contents and drop exact duplicates; return (cleaned, changes).

    Content given as text parts becomes their joined text, so duplicates are found by
    text. The input is never modified. ``normalize=None`` skips Unicode normalisation.
    """
    if normalize not in (None, "NFC", "NFKC", "NFD", "NFKD"):
        raise ValueError(f"normalize must be NFC, NFKC, NFD, NFKD or None, got {normalize!r}")
    cleaned, changes, seen = [], [], {}
    for number, example in enumerate(examples, start=1):
        example = copy.deepcopy(example)
        messages = example.get("messages") if isinstance(example, dict) else None
        for index, message in enumerate(messages if isinstance(messages, list) else []):
            content = message.get("content") if isinstance(message, dict) else None
            text, done = _clean_text(content, normalize)
            if done:
                message["content"] = text
                changes.append(f"example {number}, messages[{index}]: {' and '.join(done)}")
        key = _canonical(example)
        if dedupe and key in seen:
            changes.append(f"example {number}: removed, exact duplicate of example {seen[key]}")
            continue
        seen.setdefault(key, number)
        cleaned.append(example)
    return cleaned, changes


def _clean_text(content, normalize: str | None) -> tuple[str | None, list[str]]:
    """Return a content's cleaned text and what was done to it (nothing for non-text content)."""
    text = content_text(content)
    if text is None:
        return content, []
    done = [] if text is content else ["text parts joined into one string"]
    if normalize and unicodedata.normalize(normalize, text) != text:
        text = unicodedata.normalize(normalize, text)
        done.append(f"Unicode normalised ({normalize})")
    if text.strip() != text:
        text = text.strip()
        done.append("whitespace trimmed")
    return text, done
