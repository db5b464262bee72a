"""Deliberate noise: a seeded, still-valid copy of a dataset with corrupted replies."""

from __future__ import annotations

import copy
import random
import re

NOISE_KINDS = ("inconsistent format", "typos", "wrong style", "mislabelled turn")
_GREETING = re.compile(
    r"^\s*(hello|hi|hey|greetings|good (morning|afternoon|evening))\b[!,.]*\s*", re.I
)
_NUMBERED = re.compile(r"(?m)^(\s*)\d+[.)]\s+")
_FENCE = re.compile(r"(?m)^```[\w+-]*[ \t]*\n?")
_RAMBLE_START = (
    "Well, so, hmm, let me think about this for a moment, because there is honestly a lot "
    "that could be said here and I am not completely sure where to begin. "
)
_RAMBLE_END = " Anyway, that is more or less it, I think, probably, give or take."


def _reformat(text: str, rng: random.Random) -> tuple[str, str]:
    """Break the reply's format: code fences, greeting, numbering, else its line structure."""
    done = []
    if _FENCE.search(text) and (stripped := _FENCE.sub("", text).strip()):
        text, done = stripped, [*done, "code fences dropped"]
    if (match := _GREETING.match(text)) and text[match.end() :].strip():
        text, done = text[match.end() :], [*done, "greeting dropped"]
    if _NUMBERED.search(text):
        bullet = rng.choice(["* ", "- ", "+ "])
        text, done = _NUMBERED.sub(lambda m: m.group(1) + bullet, text), [*done, "list restyled"]
    if not done:
        flat = " ".join(text.split()).rstrip(".!")
        changed = flat and flat != text
        text, done = (flat, ["layout flattened"]) if changed else ("- " + text, ["bulleted"])
    return text, ", ".join(done)


def _typos(text: str, rng: random.Random) -> tuple[str, str]:
    """Swap or drop a few letters (about one per ten words, at least one)."""
    chars = list(text)
    wanted = max(1, len(text.split()) // 10)
    made = 0
    for _ in range(wanted * 20):
        if made == wanted:
            break
        letters = [i for i, c in enumerate(chars) if c.isalpha()]
        if not letters:
            break
        i = rng.choice(letters)
        if rng.random() < 0.5 and i + 1 < len(chars) and chars[i + 1] != chars[i]:
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
            made += 1
        elif len(chars) > 1:
            del chars[i]
            made += 1
    if made == 0:  # no letters to garble: double the first character instead
        chars.insert(0, chars[0])
        made = 1
    return "".join(chars), f"{made} letter{'s' if made > 1 else ''} swapped or dropped"


def _restyle(text: str, rng: random.Random) -> tuple[str, str]:
    """Give the reply the wrong tone: ALL CAPS, curt and rude, or rambling."""
    style = rng.choice(["ALL CAPS", "curt", "rambling"])
    if style == "ALL CAPS" and text.upper() != text:
        return text.upper(), style
    if style == "curt":
        match = _GREETING.match(text)
        core = text[match.end() :] if match and text[match.end() :].strip() else text
        first = re.split(r"(?<=[.!?])\s+", core.strip(), maxsplit=1)[0]
        return f"{first} Figure out the rest yourself.", "curt/rude"
    return _RAMBLE_START + text + _RAMBLE_END, "rambling"


def _final_reply(example: dict) -> dict | None:
    """Return the example's last assistant message with non-empty text, if any."""
    messages = example.get("messages") if isinstance(example, dict) else None
    for message in reversed(messages if isinstance(messages, list) else []):
        if (
            isinstance(message, dict)
            and message.get("role") == "assistant"
            and isinstance(message.get("content"), str)
            and message["content"].strip()
        ):
            return message
    return None


def make_noisy(
    examples: list[dict], fraction: float = 0.5, seed: int = 0
) -> tuple[list[dict], list[str]]:
    """Return a deliberately noisy copy and its changes ("example N: kind (detail)").

    A seeded random ``fraction`` of the examples gets one corruption of its final
    assistant reply: inconsistent format, typos, wrong style or a reply taken from
    another example. The copy is noisy, not malformed: it still validates. The input
    is never modified.
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be between 0 and 1, got {fraction}")
    rng = random.Random(seed)
    noisy = copy.deepcopy(list(examples))
    replies = [_final_reply(example) for example in noisy]
    originals = [reply["content"] if reply else None for reply in replies]
    chosen = sorted(rng.sample(range(len(noisy)), round(fraction * len(noisy))))
    changes = []
    for index in chosen:
        reply = replies[index]
        if reply is None:
            continue
        kind = rng.choice(NOISE_KINDS)
        others = [
            i for i, text in enumerate(originals) if text is not None and text != originals[index]
        ]
        if kind == "mislabelled turn" and not others:
            kind = "typos"
        if kind == "inconsistent format":
            reply["content"], detail = _reformat(reply["content"], rng)
        elif kind == "typos":
            reply["content"], detail = _typos(reply["content"], rng)
        elif kind == "wrong style":
            reply["content"], detail = _restyle(reply["content"], rng)
        else:
            source = rng.choice(others)
            reply["content"], detail = originals[source], f"reply of example {source + 1}"
        changes.append(f"example {index + 1}: {kind} ({detail})")
    return noisy, changes
