"""A safety filter for the medical assistant: rules plus a classifier on sentence embeddings.

``check_request`` blocks dangerous requests (overdoses, stopping medication against advice,
self-harm, obtaining prescription drugs illegally, dangerous remedies, procedures and
mixtures); ``check_response`` blocks answers that recommend dangerous actions;
``safe_generate`` wraps any ``question -> answer`` function with both checks, a refusal
and the disclaimer. Two layers work together:

1. high-precision regular expressions (case-insensitive, tolerant of a few common typos),
   kept as data in ``rules.yaml`` and checked when they are read (:mod:`.rulefile`);
2. a logistic regression on all-MiniLM-L6-v2 embeddings, trained on
   ``data/samples/medical_safety.jsonl``, which catches paraphrases and indirect phrasing
   (:mod:`.classify`; ``python -m helpers safety fit`` refits it).

The modules, each with one job: :mod:`.text` (normalising, sentences), :mod:`.rulefile`
(reading the rules), :mod:`.rules` (matching them), :mod:`.classify`, :mod:`.checks` (the
public checks), :mod:`.evaluation` (held-out precision and recall, timing).
"""

from helpers.safety.checks import (
    DISCLAIMER,
    check_request,
    check_response,
    ensure_disclaimer,
    has_disclaimer,
    refusal,
    safe_generate,
)
from helpers.safety.classify import classifier
from helpers.safety.evaluation import benchmark, evaluate_filter
from helpers.safety.rulefile import RuleFileError, load_rules
from helpers.safety.rules import Verdict, match_request_rules, match_response_rules

__all__ = [
    "DISCLAIMER",
    "RuleFileError",
    "Verdict",
    "benchmark",
    "check_request",
    "check_response",
    "classifier",
    "ensure_disclaimer",
    "evaluate_filter",
    "has_disclaimer",
    "load_rules",
    "match_request_rules",
    "match_response_rules",
    "refusal",
    "safe_generate",
]
