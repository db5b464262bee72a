"""Noise bands and verdicts: how a notebook says whether its run supports an article's claim.

A rate measured on 20 prompts moves by several points from one sample of prompts to the
next, and a difference of two such rates moves more (about √2 times a single rate's band).
So every comparison gets its own band: :func:`difference_band` for two rates measured on
different items, :func:`paired_band` for two scores of the same items (the same prompts
answered by two models). A :class:`Claim` then states one of five outcomes, with the figure
and its band, and renders the sentence; notebooks record claims in ``metrics.json``
(``Metrics.claim``), and ``python -m helpers report`` builds the scorecard from them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

# What a run can say about a claim; nothing else is a verdict.
CONFIRMED = "confirmed"
NOT_CONFIRMED = "not confirmed"
MIXED = "mixed"
NOT_TESTED = "not tested at this budget"
BY_CONSTRUCTION = "true by construction"
OUTCOMES = (CONFIRMED, NOT_CONFIRMED, MIXED, NOT_TESTED, BY_CONSTRUCTION)


@dataclass(frozen=True)
class Band:
    """A measured value with its confidence interval (``low`` to ``high``)."""

    value: float
    low: float
    high: float
    confidence: float = 0.95

    def excludes_zero(self) -> bool:
        """Say whether the whole band lies on one side of zero."""
        return self.low > 0 or self.high < 0

    def interval(self, signed: bool = True) -> str:
        """Format the band alone in percent: ``95% band +5% to +52%``."""
        sign = "+" if signed else ""
        return f"{self.confidence:.0%} band {self.low:{sign}.0%} to {self.high:{sign}.0%}"

    def percent(self, signed: bool = True) -> str:
        """Format value and band in percent: ``+29% (95% band +5% to +52%)``."""
        return f"{self.value:{'+' if signed else ''}.0%} ({self.interval(signed)})"


def _z(confidence: float) -> float:
    """Return the two-sided normal quantile for a confidence level."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def rate_band(successes: int, n: int, confidence: float = 0.95) -> Band:
    """Return a rate with its Wilson score interval (sound at 0 %, 100 % and small n)."""
    from scipy.stats import binomtest

    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes} of {n}")
    _z(confidence)  # checks the level
    interval = binomtest(successes, n).proportion_ci(confidence, method="wilson")
    return Band(successes / n, float(interval.low), float(interval.high), confidence)


def difference_band(
    successes_a: int, n_a: int, successes_b: int, n_b: int, confidence: float = 0.95
) -> Band:
    """Return rate a minus rate b with Newcombe's interval (from the two Wilson intervals).

    For rates measured on different items. For two scores of the same items use
    :func:`paired_band`, which is narrower when the scores go together.
    """
    a = rate_band(successes_a, n_a, confidence)
    b = rate_band(successes_b, n_b, confidence)
    value = a.value - b.value
    low = value - math.hypot(a.value - a.low, b.high - b.value)
    high = value + math.hypot(a.high - a.value, b.value - b.low)
    return Band(value, low, high, confidence)


def paired_band(
    scores_a, scores_b, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> Band:
    """Return mean(a) minus mean(b) over the same items, with a paired bootstrap interval."""
    a, b = np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"need two equal, non-empty lists of scores, got {a.shape}, {b.shape}")
    differences = a - b
    rows = np.random.default_rng(seed).integers(0, len(a), size=(resamples, len(a)))
    means = differences[rows].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Band(float(differences.mean()), float(low), float(high), confidence)


def outcome(band: Band, claimed: str = "higher") -> str:
    """Return what a band says of a claimed direction: confirmed, or not confirmed.

    ``claimed`` is "higher" (the claim says the difference is positive) or "lower".
    A band that holds zero is *not confirmed*: the run cannot tell the two apart.
    """
    if claimed not in ("higher", "lower"):
        raise ValueError(f'claimed must be "higher" or "lower", got {claimed!r}')
    beyond = band.low > 0 if claimed == "higher" else band.high < 0
    return CONFIRMED if beyond else NOT_CONFIRMED


@dataclass(frozen=True)
class Claim:
    """One of the article's claims, with what this run says of it."""

    claim: str  # the article's words, quoted
    outcome: str  # one of OUTCOMES
    figure: str  # what was measured, in words and numbers
    band: str = ""  # the figure's noise band, where it has one
    note: str = ""  # why, in one clause (within noise, by construction, ...)

    def __post_init__(self):
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {self.outcome!r}")

    def markdown(self) -> str:
        """Return the verdict as a sentence: bold outcome, figure, band, note."""
        parts = [f"**{self.outcome}**: {self.figure}"]
        if self.band:
            parts.append(f" ({self.band})")
        if self.note:
            parts.append(f"; {self.note}")
        return "".join(parts)

    def record(self) -> dict:
        """Return the claim as a plain dictionary for metrics.json."""
        return asdict(self)


def combined_outcome(outcomes) -> str:
    """Return one outcome for a claim tested by several comparisons, each confirmed or not.

    All confirmed: *confirmed*; none: *not confirmed*; some but not all: *mixed* (the
    figure then says which comparisons held).
    """
    outcomes = list(outcomes)
    if not outcomes or any(o not in (CONFIRMED, NOT_CONFIRMED) for o in outcomes):
        raise ValueError(f"need one or more of {CONFIRMED!r} and {NOT_CONFIRMED!r}, got {outcomes}")
    held = outcomes.count(CONFIRMED)
    return CONFIRMED if held == len(outcomes) else NOT_CONFIRMED if held == 0 else MIXED
