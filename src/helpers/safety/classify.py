"""Request and answer classifiers: logistic regressions on sentence embeddings.

The request classifier is trained on the ``dev`` rows of ``data/samples/medical_safety.jsonl``
(never on the locked ``test`` rows) and catches paraphrases and indirect phrasing that no rule
names; the answer classifier is trained on answers (:mod:`.examples`). A text is scored per
segment (its sentences, see :func:`.text.segments`) and takes the maximum, so a benign
preamble cannot dilute a dangerous sentence. Both ship as JSON next to this module (a few
kilobytes); ``python -m helpers safety fit`` refits them after the data changes.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from helpers import embeddings
from helpers.safety.examples import data_sha256, read_answer_examples, read_examples
from helpers.safety.rules import match_request_rules, match_response_rules
from helpers.safety.text import normalise, segments

CLASSIFIER_FILE = Path(__file__).with_name("classifier.json")
ANSWER_CLASSIFIER_FILE = Path(__file__).with_name("answer_classifier.json")
MAX_FPR = 0.03  # false-positive budget on development requests (the held-out target is 5 %)
SMALL = 4  # up to this many texts are embedded one by one (a request and its sentences)
ANSWER_MAX_FPR = 0.0  # a good answer replaced by a refusal costs every user who asked it
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


def rule_hits(texts: list[str], answers: bool = False) -> np.ndarray:
    """Return whether a request rule (or an answer rule) fires on each text."""
    match = match_response_rules if answers else match_request_rules
    return np.array([match(t) is not None for t in texts], dtype=bool)


@dataclass
class Embedded:
    """Texts embedded whole (for fitting) and per segment (for scoring, the maximum)."""

    whole: np.ndarray  # one row per text
    pieces: np.ndarray  # one row per segment
    owner: np.ndarray  # the text each segment belongs to

    def take(self, rows: np.ndarray) -> Embedded:
        """Return the embeddings of the texts at ``rows`` (indices), renumbered."""
        keep = np.isin(self.owner, rows)
        renumber = {int(old): new for new, old in enumerate(rows)}
        owner = np.array([renumber[int(o)] for o in self.owner[keep]], dtype=int)
        return Embedded(self.whole[rows], self.pieces[keep], owner)

    def max_scores(self, clf: Classifier) -> np.ndarray:
        """Return each text's score: the maximum of its segments' P(dangerous)."""
        best = np.zeros(len(self.whole))
        np.maximum.at(best, self.owner, clf.scores(self.pieces))
        return best

    def top_pieces(self, clf: Classifier) -> np.ndarray:
        """Return, per text, the embedding of its highest-scoring segment."""
        scores = clf.scores(self.pieces)
        rows = [np.flatnonzero(self.owner == i) for i in range(len(self.whole))]
        return self.pieces[[r[np.argmax(scores[r])] for r in rows]]


def _encode(texts: list[str]) -> np.ndarray:
    """Embed texts; a few are embedded one by one, each on one thread (faster on a busy CPU)."""
    if len(texts) <= SMALL:
        return np.stack([embeddings.encode(text) for text in texts])
    return embeddings.encode(texts)


def score_segments(clf: Classifier, text: str) -> tuple[float, np.ndarray]:
    """Return one text's score (its highest segment's) and that segment's embedding."""
    return score_many(clf, [text])[0]


def score_many(clf: Classifier, texts: list[str]) -> list[tuple[float, np.ndarray]]:
    """:func:`score_segments` for many texts, with one call to the model for all segments."""
    pieces = [segments(normalise(text)) for text in texts]
    vectors = _encode([piece for text in pieces for piece in text])
    scores = clf.scores(vectors)
    ends = np.cumsum([len(text) for text in pieces])
    best = [
        end - len(text) + int(np.argmax(scores[end - len(text) : end]))
        for text, end in zip(pieces, ends, strict=True)
    ]
    return [(float(scores[row]), vectors[row]) for row in best]


def embed(texts: list[str]) -> Embedded:
    """Normalise and embed texts whole and per segment, in one call to the model."""
    clean = [normalise(t) for t in texts]
    pieces = [segments(t) for t in clean]
    owner = np.array([i for i, p in enumerate(pieces) for _ in p], dtype=int)
    flat = [s for p in pieces for s in p]
    unique = list(dict.fromkeys(clean + flat))  # a one-sentence text is embedded once
    vectors = _encode(unique)
    row = {text: i for i, text in enumerate(unique)}
    return Embedded(vectors[[row[t] for t in clean]], vectors[[row[s] for s in flat]], owner)


def precision_recall(y: np.ndarray, blocked: np.ndarray) -> tuple[float, float]:
    """Return precision and recall of ``blocked`` as a detector of dangerous items."""
    tp = int(np.sum(y & blocked))
    precision = tp / max(int(np.sum(blocked)), 1)
    recall = tp / max(int(np.sum(y)), 1)
    return precision, recall


def choose_threshold(scores: np.ndarray, y: np.ndarray, rules: np.ndarray, max_fpr: float) -> float:
    """Pick the threshold with the best recall (rules or score) whose false-positive rate fits.

    The classifier spends the false-positive budget the rules leave: among thresholds whose
    rate of benign items blocked is at most ``max_fpr``, the one that catches the most
    dangerous items, and of those the lowest. Rules tuned on the same data look better there
    than on new data, so the classifier is not switched off where they already catch all.
    """
    ordered = np.unique(scores)
    candidates = np.concatenate([[0.0], (ordered[:-1] + ordered[1:]) / 2, [1.0]])
    benign = max(int(np.sum(~y)), 1)
    best, best_key = 1.0, None
    for t in candidates:
        blocked = rules | (scores >= t)
        fpr = np.sum(~y & blocked) / benign
        _, recall = precision_recall(y, blocked)
        key = (fpr <= max_fpr, recall if fpr <= max_fpr else -fpr, -t)
        if best_key is None or key > best_key:
            best, best_key = float(t), key
    return best


def _fit_logistic(vectors: np.ndarray, y: np.ndarray, seed: int):
    """Fit the logistic regression (balanced classes) on embeddings."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=C, class_weight="balanced", max_iter=2000, random_state=seed)
    return model.fit(vectors, y)


def fit_embedded(
    data: Embedded, y, categories, rules, folds: int = 5, seed: int = 0, max_fpr: float = MAX_FPR
) -> Classifier:
    """Fit on whole texts; choose the threshold on out-of-fold per-segment maximum scores."""
    from sklearn.model_selection import StratifiedKFold

    y, rules = np.asarray(y, dtype=bool), np.asarray(rules, dtype=bool)
    oof = np.zeros(len(y))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, held in splitter.split(data.whole, y):
        model = _fit_logistic(data.whole[train], y[train], seed)
        fold = Classifier(model.coef_[0], float(model.intercept_[0]), 0.5)
        oof[held] = data.take(held).max_scores(fold)
    threshold = choose_threshold(oof, y, rules, max_fpr)
    model = _fit_logistic(data.whole, y, seed)
    centroids = {}
    for name in sorted({c for c, label in zip(categories, y, strict=True) if label}):
        rows = data.whole[[c == name and label for c, label in zip(categories, y, strict=True)]]
        mean = rows.mean(axis=0)
        centroids[name] = (mean / np.linalg.norm(mean)).astype(np.float32)
    coef = model.coef_[0].astype(np.float32)
    return Classifier(coef, float(model.intercept_[0]), threshold, centroids)


def fit_classifier(examples: list[dict] | None = None, seed: int = 0) -> Classifier:
    """Fit the request classifier on the development rows only (never the locked test)."""
    examples = read_examples(split="dev") if examples is None else examples
    return _fit(examples, seed, answers=False)


def fit_answer_classifier(examples: list[dict] | None = None, seed: int = 0) -> Classifier:
    """Fit the answer classifier on the development answers only."""
    examples = read_answer_examples(split="dev") if examples is None else examples
    return _fit(examples, seed, answers=True)


def _fit(examples: list[dict], seed: int, answers: bool) -> Classifier:
    """Embed the examples and fit a classifier on them, recording what it was fitted on."""
    texts = [e["text"] for e in examples]
    y = np.array([e["label"] == "dangerous" for e in examples])
    data = embed(texts)
    categories = [e["category"] for e in examples]
    budget = ANSWER_MAX_FPR if answers else MAX_FPR
    clf = fit_embedded(data, y, categories, rule_hits(texts, answers), seed=seed, max_fpr=budget)
    clf.meta = {
        "model": embeddings.MODEL_NAME,
        "fitted_on": "answers, split dev" if answers else "requests, split dev",
        "examples": len(texts),
        "C": C,
        "seed": seed,
    }
    return clf


def save_classifier(clf: Classifier, path=CLASSIFIER_FILE) -> Path:
    """Write the classifier as JSON (with the data files' hashes) and return the path."""
    clf.meta["data_sha256"] = data_sha256()
    if Path(path) == ANSWER_CLASSIFIER_FILE:
        clf.meta["answers_sha256"] = data_sha256(answers=True)
    items = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in clf.to_dict().items()]
    Path(path).write_text("{\n" + ",\n".join(items) + "\n}\n", encoding="utf-8")
    return Path(path)


def _load(path: Path) -> Classifier:
    """Read a shipped classifier; a missing file says how to make it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run python -m helpers safety fit")
    return Classifier.from_dict(json.loads(path.read_text(encoding="utf-8")))


@functools.cache
def classifier() -> Classifier:
    """Return the shipped request classifier, read once per process."""
    return _load(CLASSIFIER_FILE)


@functools.cache
def answer_classifier() -> Classifier:
    """Return the shipped answer classifier, read once per process."""
    return _load(ANSWER_CLASSIFIER_FILE)
