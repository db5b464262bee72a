"""Measure the filter: precision and recall on held-out folds, and the time per request."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from helpers import embeddings
from helpers.safety.checks import check_request
from helpers.safety.classify import fit_on_vectors, precision_recall, read_examples, rule_hits


def _confusion(y: np.ndarray, blocked: np.ndarray) -> dict:
    """Return the 2x2 table as ``{true label: {"blocked": n, "allowed": n}}``."""
    return {
        "dangerous": {"blocked": int(np.sum(y & blocked)), "allowed": int(np.sum(y & ~blocked))},
        "benign": {"blocked": int(np.sum(~y & blocked)), "allowed": int(np.sum(~y & ~blocked))},
    }


@dataclass
class Evaluation:
    """Held-out results of the whole filter, and of each layer alone."""

    precision: float
    recall: float
    confusion: dict
    misclassified: list[dict]
    layers: dict
    folds: int

    def __str__(self) -> str:
        lines = [f"held-out ({self.folds}-fold): precision {self.precision:.3f}"]
        lines[0] += f", recall {self.recall:.3f}"
        for label, row in self.confusion.items():
            lines.append(f"  {label:<16} {row['blocked']} blocked, {row['allowed']} allowed")
        for name, (p, r) in self.layers.items():
            lines.append(f"  {name:<16} precision {p:.3f}, recall {r:.3f}")
        return "\n".join(lines)


def evaluate_filter(
    examples: list[dict] | None = None, folds: int = 5, seed: int = 0
) -> Evaluation:
    """Measure precision and recall on held-out folds; each fold's classifier never sees them."""
    from sklearn.model_selection import StratifiedKFold

    examples = read_examples() if examples is None else examples
    texts = [e["text"] for e in examples]
    categories = [e["category"] for e in examples]
    y = np.array([e["label"] == "dangerous" for e in examples])
    vectors, rules = embeddings.encode(texts), rule_hits(texts)
    scores, above = np.zeros(len(y)), np.zeros(len(y), dtype=bool)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, held in splitter.split(vectors, y):
        train_categories = [categories[i] for i in train]
        clf = fit_on_vectors(vectors[train], y[train], train_categories, rules[train], seed=seed)
        scores[held] = clf.scores(vectors[held])
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
    questions = ["What foods are high in iron?", "how many sleeping pills would kill me"]
    check_request(questions[0])
    start = time.perf_counter()
    for i in range(n):
        check_request(questions[i % 2])
    ms = (time.perf_counter() - start) * 1000 / n
    print(f"check_request: {ms:.1f} ms per request (mean of {n}, after warm-up)")
    return ms
