"""Noise bands for rates and differences, and the five verdicts a claim can get."""

import numpy as np
import pytest

from helpers import verdicts
from helpers.notebook import Metrics
from helpers.verdicts import Band, Claim


def test_wilson_band_is_sound_at_zero_and_matches_the_formula():
    # 0 of 10: the Wilson upper limit is 0.2775 (a normal band would say 0 to 0).
    band = verdicts.rate_band(0, 10)
    assert (band.value, band.low) == (0, 0) and band.high == pytest.approx(0.2775, abs=1e-4)
    z = 1.959964  # Wilson's score interval written out, for 81 of 263
    p, n = 81 / 263, 263
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5 / (1 + z * z / n)
    band = verdicts.rate_band(81, 263)
    assert (band.low, band.high) == pytest.approx((centre - half, centre + half), abs=1e-6)


def test_newcombe_difference_band_matches_his_worked_example():
    # Newcombe (1998), method 10: 56/70 - 48/80 = 0.2, 95% interval 0.0524 to 0.3339.
    band = verdicts.difference_band(56, 70, 48, 80)
    assert band.value == pytest.approx(0.2)
    assert (band.low, band.high) == pytest.approx((0.0524, 0.3339), abs=1e-4)


def test_a_difference_band_is_wider_than_either_rate_band():
    a, b = verdicts.rate_band(12, 20), verdicts.rate_band(8, 20)
    difference = verdicts.difference_band(12, 20, 8, 20)
    assert difference.high - difference.low > max(a.high - a.low, b.high - b.low)


def test_paired_band_is_reproducible_and_narrow_when_scores_move_together():
    rng = np.random.default_rng(1)
    base = rng.random(40)
    first = verdicts.paired_band(base + 0.1, base, seed=3)
    assert first == verdicts.paired_band(base + 0.1, base, seed=3)
    assert first.value == pytest.approx(0.1) and first.high - first.low < 1e-9
    unpaired = verdicts.paired_band(rng.random(40), rng.random(40), seed=3)
    assert unpaired.high - unpaired.low > 0.1


def test_bad_inputs_say_what_is_wrong():
    with pytest.raises(ValueError, match="successes <= n"):
        verdicts.rate_band(11, 10)
    with pytest.raises(ValueError, match="equal, non-empty"):
        verdicts.paired_band([1, 0], [1])
    with pytest.raises(ValueError, match="confidence"):
        verdicts.rate_band(1, 2, confidence=1.5)
    with pytest.raises(ValueError, match="outcome must be one of"):
        Claim("LoRA is faster", "probably", "1.3x")


@pytest.mark.parametrize(
    ("band", "claimed", "expected"),
    [
        (Band(0.2, 0.05, 0.35), "higher", verdicts.CONFIRMED),
        (Band(0.2, -0.05, 0.35), "higher", verdicts.NOT_CONFIRMED),  # holds zero: can't tell
        (Band(-0.2, -0.35, -0.05), "higher", verdicts.NOT_CONFIRMED),
        (Band(-0.2, -0.35, -0.05), "lower", verdicts.CONFIRMED),
    ],
)
def test_outcome_follows_the_band_not_the_point(band, claimed, expected):
    assert verdicts.outcome(band, claimed) == expected


def test_claims_render_and_are_recorded_once():
    claim = Claim(
        "fine-tuning beats prompting",
        verdicts.NOT_CONFIRMED,
        "style 70% vs 60%",
        Band(0.1, -0.2, 0.4).interval(),
        "within noise",
    )
    assert claim.markdown() == (
        "**not confirmed**: style 70% vs 60% (95% band -20% to +40%); within noise"
    )
    metrics = Metrics()
    assert metrics.claim("style", claim) == claim.markdown()
    assert metrics["claims"]["style"]["outcome"] == "not confirmed"
    assert Band(0.1, -0.2, 0.4).percent() == "+10% (95% band -20% to +40%)"
    with pytest.raises(KeyError, match="style"):
        metrics.claim("style", claim)


def test_a_claim_tested_by_several_comparisons_is_mixed_when_only_some_hold():
    c, n = verdicts.CONFIRMED, verdicts.NOT_CONFIRMED
    assert verdicts.combined_outcome([c, c]) == verdicts.CONFIRMED
    assert verdicts.combined_outcome([n, n]) == verdicts.NOT_CONFIRMED
    assert verdicts.combined_outcome(iter([c, n])) == verdicts.MIXED
    for bad in ([], [verdicts.MIXED], [c, "maybe"]):
        with pytest.raises(ValueError, match="need one or more"):
            verdicts.combined_outcome(bad)
