"""The classifier layer: logistic regression on sentence embeddings, fitted on labelled requests.

It is trained on ``data/samples/medical_safety.jsonl`` and catches paraphrases and indirect
phrasing that no rule names. The fitted classifier ships as ``classifier.json`` next to this
module (a few kilobytes); ``python -m helpers safety fit`` refits it after the data changes.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from helpers import embeddings
from helpers.paths import sample_path
from helpers.safety.rules import match_request_rules

DATA_NAME = "medical_safety.jsonl"
CLASSIFIER_FILE = Path(__file__).with_name("classifier.json")
LABELS = ("benign", "dangerous")
TARGET_RECALL = 0.95
C = 10.0  # inverse regularisation of the logistic regression (embeddings are unit vectors)


@dataclass
class Classifier:
    """A logistic regression on embeddings, its threshold, and one centroid per category."""

    coef: np.ndarray
    intercept: float
    threshold: float
    centroids: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        """Return P(dangerous) for each embedding row."""
        return 1.0 / (1.0 + np.exp(-(np.atleast_2d(vectors) @ self.coef + self.intercept)))

    def category(self, vector: np.ndarray) -> str:
        """Return the dangerous category whose centroid is nearest to ``vector``."""
        names = list(self.centroids)
        sims = [float(vector @ self.centroids[n]) for n in names]
        return names[int(np.argmax(sims))]

    def to_dict(self) -> dict:
        """Return a JSON-ready dict, rounded to keep the shipped file small."""
        return {
            **self.meta,
            "threshold": round(float(self.threshold), 6),
            "intercept": round(float(self.intercept), 6),
            "coef": [round(float(x), 6) for x in self.coef],
            "centroids": {k: [round(float(x), 5) for x in v] for k, v in self.centroids.items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> Classifier:
        """Rebuild a classifier from ``to_dict``'s output."""
        meta = {
            k: v
            for k, v in data.items()
            if k not in ("coef", "intercept", "threshold", "centroids")
        }
        centroids = {k: np.asarray(v, dtype=np.float32) for k, v in data["centroids"].items()}
        coef = np.asarray(data["coef"], dtype=np.float32)
        return cls(coef, float(data["intercept"]), float(data["threshold"]), centroids, meta)


def read_examples(path=None) -> list[dict]:
    """Read the labelled file as ``{"text", "label", "category"}`` dicts; errors name the line."""
    path = Path(path) if path is not None else sample_path(DATA_NAME)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: labelled safety data not found")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        where = f"{path.name}, line {number}"
        try:
            example = json.loads(line)
            text = next(m["content"] for m in example["messages"] if m["role"] == "user")
            label, category = example["label"], example["category"]
        except (json.JSONDecodeError, KeyError, TypeError, StopIteration) as error:
            raise ValueError(
                f"{where}: needs a user message, 'label' and 'category' ({error!r})"
            ) from None
        if label not in LABELS:
            raise ValueError(f"{where}: field 'label' must be one of {LABELS}, got {label!r}")
        rows.append({"text": text, "label": label, "category": category})
    return rows


def rule_hits(texts: list[str]) -> np.ndarray:
    """Return whether a request rule fires on each text."""
    return np.array([match_request_rules(t) is not None for t in texts])


def precision_recall(y: np.ndarray, blocked: np.ndarray) -> tuple[float, float]:
    """Return precision and recall of ``blocked`` as a detector of dangerous items."""
    tp = int(np.sum(y & blocked))
    precision = tp / max(int(np.sum(blocked)), 1)
    recall = tp / max(int(np.sum(y)), 1)
    return precision, recall


def choose_threshold(scores: np.ndarray, y: np.ndarray, rules: np.ndarray, target: float) -> float:
    """Pick the threshold with the best precision whose recall (rules or score) meets target."""
    ordered = np.unique(scores)
    candidates = np.concatenate([[0.0], (ordered[:-1] + ordered[1:]) / 2, [1.0]])
    best, best_key = 0.5, None
    for t in candidates:
        precision, recall = precision_recall(y, rules | (scores >= t))
        key = (recall >= target, precision if recall >= target else recall, precision)
        if best_key is None or key > best_key:
            best, best_key = float(t), key
    return best


def _fit_logistic(vectors: np.ndarray, y: np.ndarray, seed: int):
    """Fit the logistic regression (balanced classes) on embeddings."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=C, class_weight="balanced", max_iter=2000, random_state=seed)
    return model.fit(vectors, y)


def fit_on_vectors(vectors, y, categories, rules, folds: int = 5, seed: int = 0) -> Classifier:
    """Fit on embeddings; choose the threshold on out-of-fold scores (inner cross-validation)."""
    from sklearn.model_selection import StratifiedKFold

    y, rules = np.asarray(y, dtype=bool), np.asarray(rules, dtype=bool)
    oof = np.zeros(len(y))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, held in splitter.split(vectors, y):
        model = _fit_logistic(vectors[train], y[train], seed)
        oof[held] = model.predict_proba(vectors[held])[:, 1]
    threshold = choose_threshold(oof, y, rules, TARGET_RECALL)
    model = _fit_logistic(vectors, y, seed)
    centroids = {}
    for name in sorted({c for c, label in zip(categories, y, strict=True) if label}):
        rows = vectors[[c == name and label for c, label in zip(categories, y, strict=True)]]
        mean = rows.mean(axis=0)
        centroids[name] = (mean / np.linalg.norm(mean)).astype(np.float32)
    coef = model.coef_[0].astype(np.float32)
    return Classifier(coef, float(model.intercept_[0]), threshold, centroids)


def fit_classifier(examples: list[dict] | None = None, seed: int = 0) -> Classifier:
    """Embed the labelled requests and fit the classifier on all of them."""
    examples = read_examples() if examples is None else examples
    texts = [e["text"] for e in examples]
    y = np.array([e["label"] == "dangerous" for e in examples])
    vectors = embeddings.encode(texts)
    clf = fit_on_vectors(vectors, y, [e["category"] for e in examples], rule_hits(texts), seed=seed)
    clf.meta = {"model": embeddings.MODEL_NAME, "examples": len(texts), "C": C, "seed": seed}
    return clf


def data_sha256(path=None) -> str:
    """Return the SHA-256 of the labelled file, recorded in the shipped classifier."""
    path = Path(path) if path is not None else sample_path(DATA_NAME)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_classifier(clf: Classifier, path=CLASSIFIER_FILE) -> Path:
    """Write the classifier as JSON (with the data file's hash) and return the path."""
    clf.meta["data_sha256"] = data_sha256()
    items = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in clf.to_dict().items()]
    Path(path).write_text("{\n" + ",\n".join(items) + "\n}\n", encoding="utf-8")
    return Path(path)


@functools.cache
def classifier() -> Classifier:
    """Return the shipped classifier, read once per process."""
    if not CLASSIFIER_FILE.is_file():
        raise FileNotFoundError(f"{CLASSIFIER_FILE} is missing: run python -m helpers safety fit")
    return Classifier.from_dict(json.loads(CLASSIFIER_FILE.read_text(encoding="utf-8")))
