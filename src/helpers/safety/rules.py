"""Match requests and answers against the safety rules (read from ``rules.yaml``)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from helpers.safety.rulefile import RuleSet, load_rules
from helpers.safety.text import normalise, sentences


@dataclass(frozen=True)
class Verdict:
    """The filter's decision: ``blocked``, the dangerous ``category`` and a readable ``reason``."""

    blocked: bool
    category: str | None = None
    reason: str = ""
    score: float | None = None  # the classifier's P(dangerous), when it was consulted


@functools.cache
def default_rules() -> RuleSet:
    """Return the rules shipped with the course, read and checked once per process."""
    return load_rules()


def match_request_rules(text: str, rules: RuleSet | None = None) -> Verdict | None:
    """Return a blocking verdict from the first request rule that fires, or None."""
    text = normalise(text)
    for rule in (rules or default_rules()).requests:
        matches = [pattern.search(text) for pattern in rule.patterns]
        if all(matches):
            return Verdict(True, rule.category, f"rule '{rule.name}' matched '{matches[0][0]}'")
    return None


NEGATION_WORDS = 4  # a negation cancels an answer rule only this close before its match
DISMISSAL_WORDS = 5  # a dismissal this close before "ask your doctor" means it is not advice
_CLAUSE = re.compile(r"[,;:()\u2013\u2014]")


def _words_before(text: str, end: int, count: int) -> str:
    """Return the last ``count`` words before ``end`` in ``text``, within the same clause."""
    clause = _CLAUSE.split(text[:end])[-1]
    return " ".join(clause.split()[-count:])


def negated(sentence: str, match: re.Match, rules: RuleSet) -> bool:
    """Tell whether a negation is in scope: inside the match or a few words before it."""
    scope = f"{_words_before(sentence, match.start(), NEGATION_WORDS)} {match[0]}"
    return rules.negation.search(scope) is not None


def deferred(sentence: str, rules: RuleSet) -> bool:
    """Tell whether the sentence's advice is to involve a doctor (not to dismiss one)."""
    for advice in rules.supervised.finditer(sentence):
        before = _words_before(sentence, advice.start(), DISMISSAL_WORDS)
        if not rules.dismissal.search(f"{before} {advice[0]}"):
            return True
    return False


def match_response_rules(text: str, rules: RuleSet | None = None) -> Verdict | None:
    """Return a blocking verdict for an answer that recommends a dangerous action, or None.

    A rule's match in a sentence counts unless a negation is in scope ("do not ... stop",
    "never stop"; not "No problem, you can just stop") or the sentence defers to a doctor
    ("only with your doctor"; not "no need to check with your doctor").
    """
    rules = rules or default_rules()
    for sentence in sentences(normalise(text)):
        for rule in rules.responses:
            for match in rule.patterns[0].finditer(sentence):
                if negated(sentence, match, rules) or deferred(sentence, rules):
                    continue
                return Verdict(True, rule.category, f"rule '{rule.name}' matched '{match[0]}'")
    return None
