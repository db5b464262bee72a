"""Grading an answer against a known fact: the yes or no it gives, and the numbers it states.

Word-overlap scores and "mentions the keyword" checks pass an answer that says the opposite
of the fact ("The RSV jab is not recommended for you" mentions RSV). These checks read what
an answer commits to instead: :func:`yes_no` the stance of its first sentence, and
:func:`states_number` whether it gives a number, in digits or in words. They are simple on
purpose, so a learner can check each grade against the printed answer.
"""

from __future__ import annotations

import re

YES_NO_QUESTION = re.compile(
    r"^\s*(?:can|could|is|are|am|was|were|should|shall|do|does|did|will|would|may|might|"
    r"must|has|have|had)\b",
    re.IGNORECASE,
)
YES = re.compile(r"^\W*(?:yes|yeah|yep|sure|absolutely|definitely|of course)\b", re.IGNORECASE)
NO = re.compile(r"^\W*(?:no|nope)\b", re.IGNORECASE)
NEGATION = re.compile(r"\b(?:not|never|no|none|nothing)\b|n't\b", re.IGNORECASE)
FIRST_SENTENCE = re.compile(r"^\s*(.*?)(?:[.!?](?:\s|$)|\n|$)", re.DOTALL)
UNITS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
UNITS += "fifteen sixteen seventeen eighteen nineteen"
TENS = "twenty thirty forty fifty sixty seventy eighty ninety"


def asks_yes_no(question: str) -> bool:
    """Tell whether a question asks for a yes or a no (it opens with an auxiliary verb)."""
    return YES_NO_QUESTION.match(question) is not None


def first_sentence(text: str) -> str:
    """Return the text up to its first full stop, question or exclamation mark, or line end."""
    return FIRST_SENTENCE.match(text).group(1).strip()


def yes_no(answer: str) -> str | None:
    """Return the stance of an answer's first sentence: "yes", "no", or None when it has none.

    "Yes, ..." is yes; "No, ..." and a first sentence with a negation ("It's best not to",
    "The vaccine is not recommended for you") are no; anything else commits to neither.
    """
    sentence = first_sentence(answer)
    if YES.match(sentence):
        return "yes"
    if NO.match(sentence) or NEGATION.search(sentence):
        return "no"
    return None


def number_words(number: int) -> str:
    """Spell a whole number from 0 to 99 in English words: 75 -> "seventy-five"."""
    if not 0 <= number <= 99:
        raise ValueError(f"number_words spells 0 to 99, got {number}")
    if number < 20:
        return UNITS.split()[number]
    tens, units = divmod(number, 10)
    word = TENS.split()[tens - 2]
    return f"{word}-{UNITS.split()[units]}" if units else word


def states_number(text: str, number: int) -> bool:
    """Tell whether a text states a whole number, in digits or (up to 99) in words."""
    if re.search(rf"(?<![\d.]){number}(?![\d]|\.\d)", text):
        return True
    if not 0 <= number <= 99:
        return False
    spelled = number_words(number).replace("-", r"[-\s]")
    return re.search(rf"\b{spelled}\b", text, re.IGNORECASE) is not None
