"""Chapters 07 and 09, stats: reading a result beside its noise, with paired comparisons of two
classifiers scored on the same clips (every model number of the course is read this way,
beside :mod:`ssast_teach.baselines`).

Two classifiers scored on the same test clips are paired: a clip both get right, or both get
wrong, says nothing about which is better; only the clips where they disagree do. Two tools
read those pairs:

* :func:`mcnemar`, the exact McNemar test: of the ``b + c`` clips where exactly one classifier
  is right, is ``b`` (A right, B wrong) too far from half to be chance?
* :func:`paired_bootstrap`, a confidence interval for the accuracy difference A - B, from
  resampling the clips. It also takes several training seeds scored on the same clips: each
  clip's correctness is averaged over the seeds first, so seed noise and clip noise are both
  in the interval.

:func:`verdict` turns an interval into one of three words, never "held" for a sign alone;
:func:`compare` does all three and returns a printable :class:`Comparison`. Numpy only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np

__all__ = [
    "Comparison",
    "McNemar",
    "PairedInterval",
    "VERDICTS",
    "compare",
    "mcnemar",
    "paired_bootstrap",
    "verdict",
]

VERDICTS = ("held beyond noise", "inconclusive", "reversed beyond noise")

# Resampled clip indices are drawn in blocks of at most this many, so 10 000 resamples of a
# large test set never hold one (n_resamples, n_clips) array in memory at once.
_BLOCK_ELEMENTS = 1 << 22


class McNemar(NamedTuple):
    """The discordant pairs of two classifiers on the same clips and the exact p-value."""

    b: int  # clips A got right and B wrong
    c: int  # clips A got wrong and B right
    p_value: float  # exact two-sided: 2 * P(X <= min(b, c)), X ~ Binomial(b + c, 1/2), at most 1


class PairedInterval(NamedTuple):
    """The accuracy difference A - B and its bootstrap confidence interval."""

    diff: float
    low: float
    high: float


def _correctness(x: object, name: str) -> np.ndarray:
    """``x`` as a float ``(n_seeds, n_clips)`` array of 0/1; a ``(n_clips,)`` array is one seed."""
    a = np.asarray(x)
    if a.ndim == 1:
        a = a[None]  # (1, n_clips)
    if a.ndim != 2:
        raise ValueError(
            f"{name}: expected per-clip correctness (n_clips,) or (n_seeds, n_clips), "
            f"got shape {np.shape(x)}"
        )
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name}: needs at least one seed and one clip, got shape {a.shape}")
    if a.dtype.kind not in "biuf" or not np.isin(a, (0, 1)).all():
        raise ValueError(f"{name}: every value must be 0 or 1 (or a bool), got dtype {a.dtype}")
    return a.astype(np.float64)


def _paired(correct_a: object, correct_b: object) -> tuple[np.ndarray, np.ndarray]:
    """Both sides checked; they must score the same clips (each may have its own seeds)."""
    a = _correctness(correct_a, "correct_a")
    b = _correctness(correct_b, "correct_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"correct_a scores {a.shape[1]} clips and correct_b {b.shape[1]}: a paired "
            "comparison needs both classifiers scored on the same clips, in the same order"
        )
    return a, b


def _binomial_half_tail(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), exact: integer binomial sums, one rounding."""
    term, total = 1, 1  # C(n, 0)
    for i in range(1, k + 1):
        term = term * (n - i + 1) // i  # C(n, i), exact in integers
        total += term
    return total / 2**n


def mcnemar(correct_a: object, correct_b: object) -> McNemar:
    """Exact two-sided McNemar test of two classifiers on the same clips.

    ``correct_a`` and ``correct_b`` are ``(n_clips,)`` 0/1 (or bool) arrays, 1 where the
    classifier got the clip right. Only the discordant clips count: ``b`` (A right, B wrong)
    and ``c`` (A wrong, B right); under "equally good" ``b ~ Binomial(b + c, 1/2)``. With no
    discordant clip the p-value is 1.
    """
    a, b_ = _paired(correct_a, correct_b)
    if a.shape[0] != 1 or b_.shape[0] != 1:
        raise ValueError(
            "mcnemar pairs single 0/1 outcomes: give (n_clips,) arrays, one seed each, got "
            f"{a.shape[0]} seed(s) for correct_a and {b_.shape[0]} for correct_b"
        )
    b = int(np.sum((a[0] == 1) & (b_[0] == 0)))
    c = int(np.sum((a[0] == 0) & (b_[0] == 1)))
    p = min(1.0, 2 * _binomial_half_tail(min(b, c), b + c))
    return McNemar(b, c, p)


def paired_bootstrap(
    correct_a: object,
    correct_b: object,
    *,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedInterval:
    """The accuracy difference A - B with a percentile bootstrap interval over clips.

    Inputs are ``(n_clips,)`` 0/1 arrays or ``(n_seeds, n_clips)`` arrays (several training
    seeds scored on the same clips; A and B may have different numbers of seeds). Each clip's
    correctness is averaged over its seeds, then the clips are resampled with replacement
    ``n_resamples`` times: the clip, not the seed, is the unit a new test set would redraw.
    Deterministic for a ``seed``.
    """
    a, b = _paired(correct_a, correct_b)
    if not (isinstance(n_resamples, int) and n_resamples >= 1):
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (e.g. 0.95), got {confidence!r}")
    per_clip = a.mean(axis=0) - b.mean(axis=0)  # (n_clips,) seed-averaged difference
    n = per_clip.size
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ELEMENTS // n)
    means = np.concatenate([
        per_clip[rng.integers(0, n, size=(min(block, n_resamples - start), n))].mean(axis=1)
        for start in range(0, n_resamples, block)
    ])  # (n_resamples,) the difference on each resampled test set
    alpha = 1 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return PairedInterval(float(per_clip.mean()), float(low), float(high))


def verdict(low: float, high: float) -> str:
    """``"held beyond noise"`` when the interval lies above 0, ``"reversed beyond noise"``
    below 0, ``"inconclusive"`` when it contains 0 (an end at exactly 0 included)."""
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        raise ValueError(f"verdict needs a finite interval low <= high, got ({low}, {high})")
    if low > 0:
        return VERDICTS[0]
    if high < 0:
        return VERDICTS[2]
    return VERDICTS[1]


@dataclass(frozen=True)
class Comparison:
    """Classifier A against classifier B on the same clips; ``print`` it for one line."""

    name_a: str
    name_b: str
    accuracy_a: float  # mean over seeds and clips
    accuracy_b: float
    diff: float  # accuracy_a - accuracy_b
    low: float  # the bootstrap interval of diff
    high: float
    confidence: float
    mcnemar_p: float | None  # None when a side has several seeds: McNemar pairs single outcomes
    n_clips: int
    n_seeds: tuple[int, int]  # (A's, B's)
    verdict: str

    def __str__(self) -> str:
        seeds = "" if self.n_seeds == (1, 1) else f", seeds {self.n_seeds[0]} vs {self.n_seeds[1]}"
        p = "" if self.mcnemar_p is None else f", McNemar p={self.mcnemar_p:.3g}"
        return (
            f"{self.name_a} {self.accuracy_a:.3f} vs {self.name_b} {self.accuracy_b:.3f} on "
            f"{self.n_clips} clips{seeds}: {100 * self.diff:+.1f} points "
            f"[{100 * self.confidence:g}% CI {100 * self.low:+.1f}, {100 * self.high:+.1f}]{p}: "
            f"{self.verdict}"
        )

    def to_dict(self) -> dict[str, object]:
        """The fields as JSON-ready values (``n_seeds`` a list)."""
        return {**asdict(self), "n_seeds": list(self.n_seeds)}


def compare(
    correct_a: object,
    correct_b: object,
    *,
    name_a: str,
    name_b: str,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Comparison:
    """A against B on the same clips: accuracies, the bootstrap interval of A - B
    (:func:`paired_bootstrap`), the McNemar p-value when each side is one seed, the verdict."""
    a, b = _paired(correct_a, correct_b)
    interval = paired_bootstrap(a, b, n_resamples=n_resamples, confidence=confidence, seed=seed)
    single = a.shape[0] == 1 and b.shape[0] == 1
    return Comparison(
        name_a=name_a,
        name_b=name_b,
        accuracy_a=float(a.mean()),
        accuracy_b=float(b.mean()),
        diff=interval.diff,
        low=interval.low,
        high=interval.high,
        confidence=confidence,
        mcnemar_p=mcnemar(a[0], b[0]).p_value if single else None,
        n_clips=a.shape[1],
        n_seeds=(a.shape[0], b.shape[0]),
        verdict=verdict(interval.low, interval.high),
    )
