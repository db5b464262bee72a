"""Text handling shared by the safety checks: undoing obfuscation, sentences, argument checks.

``normalise`` turns the tricks people use to slip past keyword rules back into plain Latin
text, one step per trick (each step is a function, tested on its own):

1. compatibility forms folded (NFKC: full-width and mathematical letters, ligatures);
2. invisible format characters (zero-width space and joiners, soft hyphen, word joiner,
   byte-order mark: Unicode category Cf) and combining accents removed;
3. letters from other scripts that look like Latin ones (Cyrillic "і", Greek "ο") mapped to
   the Latin letter, from Unicode's confusables data (the ``confusable_homoglyphs`` package);
4. leetspeak digits and symbols inside words read as letters ("k1ll", "0verdose", "p@ss");
5. letters split by spaces, dots or hyphens joined ("l e t h a l", "k.i.l.l"), and words
   glued with hyphens, dots or underscores separated ("kill-myself");
6. curly quotes straightened and runs of whitespace made one space.
"""

from __future__ import annotations

import functools
import re
import unicodedata

LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"}
)
_TOKEN = re.compile(r"[^\W_]*[013457@$][\w@$]*", re.UNICODE)
# Digits that are not leetspeak: a number with a unit ("500mg", "4yo", "3rd") or a name with a
# number ("b12", "d3", "covid19" is left alone by the letter-count rule below).
_NOT_LEET = re.compile(r"\d[\d.,]*[a-z]{0,4}|[a-z]{1,3}\d+|[\d.,]+", re.IGNORECASE)
_SPLIT_LETTERS = re.compile(r"\b[a-z](?:([ .\-_*])[a-z]\b)(?:\1[a-z]\b){1,}", re.IGNORECASE)
_GLUE = re.compile(r"(?<=[a-z]{2})[-_.*\u2010\u2011\u2012\u2013\u2014]+(?=[a-z]{2})", re.IGNORECASE)
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"'})


def fold(text: str) -> str:
    """Fold compatibility forms (NFKC): full-width, mathematical and ligature letters."""
    return unicodedata.normalize("NFKC", text)


def strip_invisible(text: str) -> str:
    """Remove invisible format characters (category Cf) and combining marks (accents)."""
    decomposed = unicodedata.normalize("NFKD", text)
    kept = "".join(c for c in decomposed if unicodedata.category(c) not in ("Cf", "Mn"))
    return unicodedata.normalize("NFC", kept)


@functools.cache
def latin_lookalike(char: str) -> str:
    """Return the ASCII letter ``char`` is confusable with (Unicode's data), else ``char``."""
    from confusable_homoglyphs import confusables

    found = confusables.is_confusable(char, greedy=True, preferred_aliases=["latin"])
    for entry in found or ():
        for glyph in entry["homoglyphs"]:
            if len(glyph["c"]) == 1 and glyph["c"].isascii() and glyph["c"].isalpha():
                # Unicode's data folds capital I into l; a capital stays a capital I
                return "I" if glyph["c"] == "l" and char.isupper() else glyph["c"]
    return char


def to_latin(text: str) -> str:
    """Map letters of other scripts that look like Latin letters to those letters."""
    if text.isascii():
        return text
    return "".join(c if c.isascii() or not c.isalpha() else latin_lookalike(c) for c in text)


def _read_leet(match: re.Match) -> str:
    """Read one word's leetspeak, unless it is a number, a unit or a short code like b12."""
    word = match[0]
    if _NOT_LEET.fullmatch(word) or sum(c.isalpha() for c in word) < 2:
        return word
    return word.translate(LEET)


def read_leetspeak(text: str) -> str:
    """Read digits and @ or $ inside words as the letters they stand for ("k1ll" -> "kill")."""
    return _TOKEN.sub(_read_leet, text)


def join_split_letters(text: str) -> str:
    """Join single letters split by one separator ("l e t h a l") and unglue hyphenated words."""
    text = _SPLIT_LETTERS.sub(lambda m: re.sub(r"[ .\-_*]", "", m[0]), text)
    return _GLUE.sub(" ", text)


def normalise(text: str) -> str:
    """Undo the obfuscation tricks above, for the rules and the classifier."""
    text = to_latin(strip_invisible(fold(text)))
    text = join_split_letters(read_leetspeak(text)).translate(_QUOTES)
    return re.sub(r"\s+", " ", text).strip()


def sentences(text: str) -> list[str]:
    """Split a text into sentences and lines."""
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]


def segments(text: str, max_words: int = 60) -> list[str]:
    """Split a text into its sentences, cutting any sentence longer than ``max_words`` words.

    The classifier scores each segment, so neither a long benign preamble nor the embedding
    model's 256-token cut can hide a dangerous sentence.
    """
    pieces = []
    for sentence in sentences(text) or [text]:
        words = sentence.split()
        pieces += [" ".join(words[i : i + max_words]) for i in range(0, len(words), max_words)]
    return pieces or [text]


def check_text(text, name: str) -> str:
    """Return ``text`` if it is a string, else raise a TypeError naming the argument."""
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a string, got {type(text).__name__}")
    return text
