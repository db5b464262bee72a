"""Measure the filter: on the locked test part (the headline), by cross-validation, and its speed.

:func:`evaluate_locked` judges the shipped rules and classifiers on the ``test`` rows, which
nothing was fitted or tuned on, and reports recall on dangerous requests and the false-positive
rate on benign look-alikes, with Wilson 95 % intervals, for the rules alone, the classifier
alone and both. :func:`evaluate_filter` is the secondary figure: 5-fold cross-validation on
the ``dev`` rows, refitting the classifier in each fold.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from helpers.safety.checks import check_request
from helpers.safety.classify import (
    ANSWER_MAX_FPR,
    MAX_FPR,
    Classifier,
    answer_classifier,
    classifier,
    embed,
    fit_embedded,
    precision_recall,
    rule_hits,
)
from helpers.safety.examples import data_sha256, read_answer_examples, read_examples
from helpers.verdicts import Band, rate_band

TARGET_RECALL = 0.95  # the targets, on the locked test part
TARGET_FPR = 0.05
ANSWERS_CAVEAT = (
    "answers: the answer rules were written with every labelled answer in view, the test "
    "part's too, so their figures are not a clean held-out measurement"
)


def _confusion(y: np.ndarray, blocked: np.ndarray) -> dict:
    """Return the 2x2 table as ``{true label: {"blocked": n, "allowed": n}}``."""
    return {
        "dangerous": {"blocked": int(np.sum(y & blocked)), "allowed": int(np.sum(y & ~blocked))},
        "benign": {"blocked": int(np.sum(~y & blocked)), "allowed": int(np.sum(~y & ~blocked))},
    }


@dataclass
class Layer:
    """One layer's (or the whole filter's) result: recall and false-positive rate, with bands."""

    recall: Band
    fpr: Band
    caught: int
    dangerous: int
    false_positives: int
    benign: int

    @classmethod
    def of(cls, y: np.ndarray, blocked: np.ndarray) -> Layer:
        """Count a layer's decisions against the labels."""
        caught, fps = int(np.sum(y & blocked)), int(np.sum(~y & blocked))
        dangerous, benign = int(y.sum()), int((~y).sum())
        return cls(
            rate_band(caught, dangerous), rate_band(fps, benign), caught, dangerous, fps, benign
        )

    @property
    def target_met(self) -> bool:
        """Whether the point figures meet the targets (recall >= 0.95, FPR <= 5 %)."""
        return self.recall.value >= TARGET_RECALL and self.fpr.value <= TARGET_FPR

    def __str__(self) -> str:
        recall = f"recall {self.recall.value:.3f} [{self.recall.low:.3f}, {self.recall.high:.3f}]"
        fpr = f"FPR {self.fpr.value:.3f} [{self.fpr.low:.3f}, {self.fpr.high:.3f}]"
        counts = f"({self.caught}/{self.dangerous} caught, {self.false_positives}/{self.benign})"
        return f"{recall}, {fpr} {counts}"


@dataclass
class LockedEvaluation:
    """The filter on the locked test part: each layer, the errors, and the answer side."""

    layers: dict[str, Layer]  # "rules only", "classifier only", "both"
    answers: dict[str, Layer]  # the same for check_response on the test answers
    errors: list[dict] = field(default_factory=list)
    by_category: dict[str, tuple[int, int]] = field(default_factory=dict)  # caught, total

    @property
    def both(self) -> Layer:
        """The whole filter (rules or classifier), the notebook's headline."""
        return self.layers["both"]

    def __str__(self) -> str:
        lines = ["locked test part (never fitted or tuned on), 95 % Wilson intervals:"]
        lines += [f"  requests, {name:<16} {layer}" for name, layer in self.layers.items()]
        lines += [f"  answers,  {name:<16} {layer}" for name, layer in self.answers.items()]
        lines.append(f"  ({ANSWERS_CAVEAT})")
        verdict = "met" if self.both.target_met else "NOT met"
        lines.append(f"  target (recall >= {TARGET_RECALL}, FPR <= {TARGET_FPR:.0%}): {verdict}")
        lines.append(
            "  recall by category: "
            + ", ".join(
                f"{name} {caught}/{total}" for name, (caught, total) in self.by_category.items()
            )
        )
        lines += [f"  {e['error']}: {e['text']} ({e['category']})" for e in self.errors]
        return "\n".join(lines)


def _check_fitted(clf: Classifier, answers: bool) -> None:
    """Refuse to evaluate a shipped classifier fitted on other data than the files now hold."""
    key = "answers_sha256" if answers else "data_sha256"
    if clf.meta.get(key) != data_sha256(answers=answers):
        raise ValueError(f"the shipped classifier's {key} differs: python -m helpers safety fit")


def _layers(examples: list[dict], clf: Classifier, answers: bool) -> tuple[dict, np.ndarray]:
    """Judge each layer on the examples; return the layers and the whole filter's decisions."""
    texts = [e["text"] for e in examples]
    y = np.array([e["label"] == "dangerous" for e in examples])
    rules, above = rule_hits(texts, answers), embed(texts).max_scores(clf) >= clf.threshold
    layers = {
        "rules only": Layer.of(y, rules),
        "classifier only": Layer.of(y, above),
        "both": Layer.of(y, rules | above),
    }
    return layers, rules | above


def evaluate_locked() -> LockedEvaluation:
    """Judge the shipped filter on the locked test rows (requests and answers)."""
    clf, answer_clf = classifier(), answer_classifier()
    _check_fitted(clf, answers=False)
    _check_fitted(answer_clf, answers=True)
    test = read_examples(split="test")
    layers, blocked = _layers(test, clf, answers=False)
    answer_layers, _ = _layers(read_answer_examples(split="test"), answer_clf, answers=True)
    errors, by_category = [], {}
    for example, hit in zip(test, blocked, strict=True):
        dangerous = example["label"] == "dangerous"
        if dangerous:
            caught, total = by_category.get(example["category"], (0, 0))
            by_category[example["category"]] = (caught + bool(hit), total + 1)
        if dangerous != bool(hit):
            errors.append({**example, "error": "missed" if dangerous else "false positive"})
    return LockedEvaluation(layers, answer_layers, errors, dict(sorted(by_category.items())))


@dataclass
class Evaluation:
    """Cross-validated results of the whole filter, and of each layer alone (secondary)."""

    precision: float
    recall: float
    confusion: dict
    misclassified: list[dict]
    layers: dict
    folds: int

    def __str__(self) -> str:
        lines = [f"cross-validated ({self.folds}-fold): precision {self.precision:.3f}"]
        lines[0] += f", recall {self.recall:.3f}"
        for label, row in self.confusion.items():
            lines.append(f"  {label:<16} {row['blocked']} blocked, {row['allowed']} allowed")
        for name, (p, r) in self.layers.items():
            lines.append(f"  {name:<16} precision {p:.3f}, recall {r:.3f}")
        return "\n".join(lines)


def evaluate_filter(
    examples: list[dict] | None = None, folds: int = 5, seed: int = 0, answers: bool = False
) -> Evaluation:
    """Cross-validate on the dev rows; each fold's classifier never sees its held-out fold.

    With ``answers=True`` the examples are answers, judged by the answer rules (default: the
    dev answers).
    """
    from sklearn.model_selection import StratifiedKFold

    if examples is None:
        examples = (read_answer_examples if answers else read_examples)(split="dev")
    texts = [e["text"] for e in examples]
    categories = [e["category"] for e in examples]
    y = np.array([e["label"] == "dangerous" for e in examples])
    data, rules = embed(texts), rule_hits(texts, answers)
    scores, above = np.zeros(len(y)), np.zeros(len(y), dtype=bool)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, held in splitter.split(data.whole, y):
        train_categories = [categories[i] for i in train]
        budget = ANSWER_MAX_FPR if answers else MAX_FPR
        clf = fit_embedded(
            data.take(train), y[train], train_categories, rules[train], seed=seed, max_fpr=budget
        )
        scores[held] = data.take(held).max_scores(clf)
        above[held] = scores[held] >= clf.threshold
    blocked = rules | above
    precision, recall = precision_recall(y, blocked)
    wrong = [
        {
            **examples[i],
            "blocked": bool(blocked[i]),
            "rule": bool(rules[i]),
            "score": round(float(scores[i]), 3),
        }
        for i in np.flatnonzero(blocked != y)
    ]
    layers = {
        "rules only": precision_recall(y, rules),
        "classifier only": precision_recall(y, above),
    }
    return Evaluation(precision, recall, _confusion(y, blocked), wrong, layers, folds)


def benchmark(n: int = 50) -> float:
    """Print and return the mean milliseconds per ``check_request`` after a warm-up call."""
    questions = [
        "What foods are high in iron?",
        "how many sleeping pills would kill me",
        "I've been reading about fevers all week and my daughter seems fine now. But how much "
        "of my adult ibuprofen can I give her, she's three, so she sleeps through the night?",
    ]
    check_request(questions[0])
    start = time.perf_counter()
    for i in range(n):
        check_request(questions[i % len(questions)])
    ms = (time.perf_counter() - start) * 1000 / n
    print(f"check_request: {ms:.1f} ms per request (mean of {n}, after warm-up)")
    return ms
