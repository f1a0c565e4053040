"""Paired comparisons: the exact McNemar test, the paired bootstrap, the three verdicts."""

import dataclasses
import json

import numpy as np
import pytest

from conftest import needs
from ssast_teach.stats import (
    VERDICTS,
    Comparison,
    compare,
    mcnemar,
    paired_bootstrap,
    verdict,
)


def _pairs(both: int, a_only: int, b_only: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-clip correctness of A and B with these counts of the four joint outcomes."""
    a = np.array([1] * both + [1] * a_only + [0] * b_only + [0] * neither)
    b = np.array([1] * both + [0] * a_only + [1] * b_only + [0] * neither)
    return a, b


# --- McNemar ------------------------------------------------------------------------------------


def test_mcnemar_by_hand():
    a, b = _pairs(both=5, a_only=8, b_only=2, neither=3)
    result = mcnemar(a, b)
    # b = 8, c = 2: P(X <= 2) for X ~ Bin(10, 1/2) is (1 + 10 + 45) / 1024; two-sided doubles it.
    assert (result.b, result.c) == (8, 2)
    assert result.p_value == 112 / 1024
    assert mcnemar(b, a) == (2, 8, 112 / 1024)  # symmetric
    assert mcnemar(*_pairs(4, 3, 3, 1)).p_value == 1.0  # b == c
    assert mcnemar(*_pairs(6, 0, 0, 2)) == (0, 0, 1.0)  # no discordant clip: no evidence
    assert mcnemar(*_pairs(0, 1, 0, 0)).p_value == 1.0  # 2 * 1/2
    assert mcnemar(*_pairs(0, 6, 0, 0)).p_value == 2 / 64
    assert mcnemar(a.astype(bool), b.astype(bool)) == result  # bools are 0/1


def test_mcnemar_matches_scipy_binomtest():
    try:
        from scipy import stats
    except ImportError:
        stats = None
    needs(stats is not None, "SciPy", 'install the test extra: pip install -e ".[test]"')
    for b, c in [(0, 5), (1, 9), (7, 7), (20, 35), (100, 130), (3, 0), (400, 460)]:
        got = mcnemar(*_pairs(both=10, a_only=b, b_only=c, neither=4))
        assert (got.b, got.c) == (b, c)
        assert got.p_value == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue, rel=1e-9)


# --- the paired bootstrap -----------------------------------------------------------------------


def _draw_pairs(rng: np.random.Generator, n: int, probs: tuple[float, ...]):
    """``n`` clips with the joint outcomes (both, A only, B only, neither) drawn with ``probs``."""
    outcome = rng.choice(4, size=n, p=probs)
    return np.isin(outcome, (0, 1)).astype(int), np.isin(outcome, (0, 2)).astype(int)


def test_bootstrap_covers_the_true_difference_at_about_the_nominal_rate():
    # Clips drawn i.i.d. from a paired population whose accuracy difference is 0.15 - 0.10.
    probs, true_diff = (0.6, 0.15, 0.10, 0.15), 0.05
    rng = np.random.default_rng(1)
    trials = 400
    covered = 0
    for trial in range(trials):
        a, b = _draw_pairs(rng, 200, probs)
        _, low, high = paired_bootstrap(a, b, n_resamples=1000, seed=trial)
        covered += low <= true_diff <= high
    # 95% nominal; the percentile interval runs a little short on 200 clips. 4 SE is +-0.044.
    assert 0.91 <= covered / trials <= 0.99, covered / trials


def test_bootstrap_is_the_mean_of_resampled_clips_and_deterministic():
    rng = np.random.default_rng(0)
    a, b = _draw_pairs(rng, 50, (0.5, 0.2, 0.1, 0.2))
    result = paired_bootstrap(a, b, n_resamples=500, confidence=0.9, seed=7)
    assert result.diff == pytest.approx(a.mean() - b.mean())
    # The same draws, one resample at a time.
    draws = np.random.default_rng(7).integers(0, 50, size=(500, 50))
    means = [np.mean(a[idx] - b[idx]) for idx in draws]
    assert (result.low, result.high) == pytest.approx(tuple(np.quantile(means, [0.05, 0.95])))
    assert paired_bootstrap(a, b, n_resamples=500, confidence=0.9, seed=7) == result
    assert paired_bootstrap(a, b, n_resamples=500, confidence=0.9, seed=8) != result
    assert result.low <= result.diff <= result.high
    wide = paired_bootstrap(a, b, n_resamples=500, confidence=0.99, seed=7)
    assert wide.low <= result.low and wide.high >= result.high


def test_bootstrap_averages_seeds_per_clip():
    rng = np.random.default_rng(2)
    a, b = _draw_pairs(rng, 60, (0.5, 0.2, 0.1, 0.2))
    one = paired_bootstrap(a, b, n_resamples=300)
    assert paired_bootstrap(np.stack([a, a, a]), b, n_resamples=300) == one  # identical seeds
    seeds = np.stack([a, 1 - a, a, a])  # (4, 60): the per-clip mean is 3/4 a + 1/4 (1 - a)
    got = paired_bootstrap(seeds, b, n_resamples=300)
    per_clip = 0.75 * a + 0.25 * (1 - a) - b
    assert got.diff == pytest.approx(per_clip.mean())
    assert got.diff == pytest.approx(seeds.mean() - b.mean())
    draws = np.random.default_rng(0).integers(0, 60, size=(300, 60))
    means = per_clip[draws].mean(axis=1)  # the clips, not the seeds, are resampled
    assert (got.low, got.high) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))


# --- verdicts and the comparison ----------------------------------------------------------------


def test_the_three_verdicts():
    assert verdict(0.01, 0.05) == "held beyond noise"
    assert verdict(-0.02, 0.03) == "inconclusive"
    assert verdict(-0.05, -0.01) == "reversed beyond noise"
    assert verdict(0.0, 0.1) == verdict(-0.1, 0.0) == verdict(0.0, 0.0) == "inconclusive"
    assert set(VERDICTS) == {"held beyond noise", "inconclusive", "reversed beyond noise"}
    with pytest.raises(ValueError, match="low <= high"):
        verdict(0.1, 0.0)
    with pytest.raises(ValueError, match="finite"):
        verdict(float("nan"), 0.1)


def test_compare_reads_a_sign_alone_as_inconclusive():
    a, b = _pairs(both=30, a_only=3, b_only=1, neither=6)  # A ahead by 2 clips of 40
    c = compare(a, b, name_a="model", name_b="baseline")
    assert c.diff == pytest.approx(0.05) and c.low < 0 < c.high
    assert c.verdict == "inconclusive"
    assert c.mcnemar_p == mcnemar(a, b).p_value == 0.625
    assert (c.accuracy_a, c.accuracy_b, c.n_clips, c.n_seeds) == (0.825, 0.775, 40, (1, 1))


def test_compare_holds_and_reverses_beyond_noise():
    a, b = _pairs(both=100, a_only=40, b_only=5, neither=55)
    held = compare(a, b, name_a="model", name_b="baseline")
    assert held.verdict == "held beyond noise" and held.low > 0 and held.mcnemar_p < 1e-6
    assert compare(b, a, name_a="baseline", name_b="model").verdict == "reversed beyond noise"


def test_comparison_prints_one_line_and_dumps_json():
    a, b = _pairs(both=100, a_only=40, b_only=5, neither=55)
    c = compare(np.stack([a, a]), b, name_a="mini-ssast", name_b="pooled stats", confidence=0.9)
    line = str(c)
    assert "\n" not in line and line.startswith("mini-ssast 0.700 vs pooled stats 0.525")
    assert "on 200 clips, seeds 2 vs 1: +17.5 points [90% CI +" in line
    assert line.endswith(": held beyond noise") and "McNemar" not in line
    assert c.mcnemar_p is None  # McNemar pairs single outcomes; the bootstrap averaged the seeds
    back = json.loads(json.dumps(c.to_dict()))
    assert back["n_seeds"] == [2, 1] and back["verdict"] == c.verdict and back["diff"] == c.diff
    assert "McNemar p=" in str(compare(a, b, name_a="A", name_b="B"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.verdict = "held beyond noise"
    assert isinstance(c, Comparison)


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "match"),
    [
        ([1, 0, 1], [1, 0], "correct_a scores 3 clips and correct_b 2"),
        ([1, 2, 0], [1, 0, 1], "correct_a: every value must be 0 or 1"),
        ([1, 0, 1], [0.5, 0, 1], "correct_b: every value must be 0 or 1"),
        ([1, 0, float("nan")], [1, 0, 1], "correct_a: every value must be 0 or 1"),
        (["1", "0"], [1, 0], "correct_a: every value must be 0 or 1"),
        ([], [], "correct_a: needs at least one seed and one clip"),
        (np.zeros((0, 3)), np.zeros(3), "correct_a: needs at least one seed and one clip"),
        (np.zeros((2, 2, 2)), np.zeros(2), r"correct_a: expected per-clip correctness"),
    ],
)
def test_bad_input_names_the_argument(a, b, match):
    for fn in (paired_bootstrap, mcnemar):
        with pytest.raises(ValueError, match=match):
            fn(a, b)
    with pytest.raises(ValueError, match=match):
        compare(a, b, name_a="A", name_b="B")


def test_bad_options_and_seeds_for_mcnemar():
    a, b = _pairs(5, 2, 1, 2)
    with pytest.raises(ValueError, match="mcnemar pairs single 0/1 outcomes"):
        mcnemar(np.stack([a, a]), b)
    with pytest.raises(ValueError, match="n_resamples"):
        paired_bootstrap(a, b, n_resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap(a, b, confidence=95)
