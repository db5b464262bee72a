"""A safety filter for the medical assistant: rules plus a classifier on sentence embeddings.

``check_request`` blocks dangerous requests (overdoses, stopping medication against advice,
self-harm, obtaining prescription drugs illegally, dangerous remedies, procedures and
mixtures, unsafe doses for children and older people, eating disorders, prescription misuse,
harming others); ``check_response`` blocks answers that recommend dangerous actions;
``safe_generate`` wraps any ``question -> answer`` function with both checks, a refusal
and the disclaimer; ``safe_generate_batch`` does the same for a function that answers a
list of questions in one batch. Two layers work together:

1. high-precision regular expressions (case-insensitive, tolerant of a few common typos),
   kept as data in ``rules.yaml`` and checked when they are read (:mod:`.rulefile`);
   an answer rule is cancelled only by a negation a few words before its match, or by
   advice to involve a doctor that is not dismissed ("no need to ask your doctor");
2. logistic regressions on all-MiniLM-L6-v2 embeddings, one for requests and one for
   answers, fitted on the ``dev`` rows of the labelled data, which catch paraphrases and
   indirect phrasing; a text scores the maximum over its sentences (:mod:`.classify`;
   ``python -m helpers safety fit`` refits them).

Both layers see text after :func:`.text.normalise`, which undoes obfuscation (invisible
characters, look-alike letters, leetspeak, letters split by spaces or dots).

The modules, each with one job: :mod:`.text` (normalising, sentences), :mod:`.examples` (the
labelled data and its locked split), :mod:`.rulefile` (reading the rules), :mod:`.rules`
(matching them), :mod:`.classify`, :mod:`.checks` (the public checks), :mod:`.evaluation`
(the locked-test figures with their intervals, cross-validation, timing).
``python -m helpers safety evaluate`` (or ``python -m helpers.safety``) prints the figures.
"""

from helpers.safety.checks import (
    DISCLAIMER,
    check_request,
    check_response,
    check_responses,
    ensure_disclaimer,
    has_disclaimer,
    refusal,
    safe_generate,
    safe_generate_batch,
)
from helpers.safety.classify import answer_classifier, classifier
from helpers.safety.evaluation import benchmark, evaluate_filter, evaluate_locked
from helpers.safety.rulefile import RuleFileError, load_rules
from helpers.safety.rules import Verdict, match_request_rules, match_response_rules
from helpers.safety.text import normalise

__all__ = [
    "DISCLAIMER",
    "RuleFileError",
    "Verdict",
    "answer_classifier",
    "benchmark",
    "check_request",
    "check_response",
    "check_responses",
    "classifier",
    "ensure_disclaimer",
    "evaluate_filter",
    "evaluate_locked",
    "has_disclaimer",
    "load_rules",
    "match_request_rules",
    "match_response_rules",
    "normalise",
    "refusal",
    "safe_generate",
    "safe_generate_batch",
]
