"""Match requests and answers against the safety rules (read from ``rules.yaml``)."""

from __future__ import annotations

import functools
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


def match_response_rules(text: str, rules: RuleSet | None = None) -> Verdict | None:
    """Return a blocking verdict for an answer that recommends a dangerous action, or None."""
    rules = rules or default_rules()
    for sentence in sentences(normalise(text)):
        for rule in rules.responses:
            match = rule.patterns[0].search(sentence)
            if not match or rules.negation.search(sentence[: match.start()]):
                continue
            if rules.supervised.search(sentence):
                continue
            return Verdict(True, rule.category, f"rule '{rule.name}' matched '{match[0]}'")
    return None
