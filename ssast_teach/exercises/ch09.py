"""Checkers for chapter 09 (the ablations): the README's averages, ranking agreement, the
paired comparison of two models on the same clips, and how many unpaired standard errors
separate two accuracies.

The references are :func:`ssast_teach.ablations.readme_averages`,
:func:`ssast_teach.ablations.kendall_tau` and :func:`ssast_teach.ablations.difference_in_se`.
The paired interval is checked by its properties (the difference itself, an interval round
it, inside the range of the per-clip differences, symmetry, zero for a model against itself, a
wider gap further from zero, agreement with :func:`ssast_teach.stats.paired_bootstrap` within
Monte-Carlo noise). A case where A is never worse than B on a clip, and better on two, makes the
per-clip differences skewed and bounded: there a normal approximation reaches below 0, which no
bootstrap resample can.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Sequence

import numpy as np

from ssast_teach.ablations import difference_in_se as _difference_in_se
from ssast_teach.ablations import kendall_tau as _kendall_tau
from ssast_teach.ablations import readme_averages as _readme_averages
from ssast_teach.checkpoints import published_results
from ssast_teach.exercises import ExerciseError, call_student, checker, hidden_seed, passed
from ssast_teach.stats import paired_bootstrap

__all__ = ["check_difference_in_se", "check_kendall_tau", "check_paired_interval",
           "check_readme_averages"]


def _number(name: str, got: object, case: str) -> float:
    if isinstance(got, bool) or not isinstance(got, int | float):
        raise ExerciseError(f"{name} on {case} should return a float, got "
                            f"{type(got).__name__} {got!r}")
    return float(got)


def _close(got: float, want: float) -> bool:
    if math.isnan(want):
        return math.isnan(got)
    return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)


# ---------------------------------------------------------------------------- exercise 1


def _average_cases(hidden: bool) -> list[tuple[str, dict[str, str]]]:
    rows = {r["model"]: r for r in published_results()}
    names = ["SSAST-Base-Patch-400", "audio_model_gen", "SSAST-Small-Patch-400"]
    if hidden:
        names = list(rows)
        random.Random(hidden_seed(910)).shuffle(names)
    return [(f"the published row of {n}", dict(rows[n])) for n in names]


@checker(reference=_readme_averages)
def check_readme_averages(averages: Callable[[dict], tuple], hidden: bool = False) -> None:
    """``averages(row)``: ``(average audio, average speech)`` of one CSV row, None if missing."""
    for case, row in _average_cases(hidden):
        got = call_student(averages, dict(row), case=case)
        want = _readme_averages(row)
        if not isinstance(got, tuple | list) or len(got) != 2:
            raise ExerciseError(f"readme_averages(row) on {case} should return a pair "
                                f"(audio, speech), got {got!r}")
        for label, g, w in zip(("average audio", "average speech"), got, want, strict=True):
            if w is None:
                if g is not None:
                    raise ExerciseError(
                        f"{label} on {case} is {g!r}, expected None: a task has no published "
                        "number (an empty CSV field), and a missing number is not 0")
                continue
            value = _number(f"{label} of readme_averages(row)", g, case)
            if not _close(value, w):
                raise ExerciseError(
                    f"{label} on {case} is {value:.6g}, expected {w:.6g}: the README averages "
                    "AS-20K mAP and ESC-50 (audio), and KS2, KS1, SID, ER (speech)")
    passed(9, 1, "your averages are the README's, recomputed from the per-task numbers")


# ---------------------------------------------------------------------------- exercise 2


def _tau_cases(hidden: bool) -> list[tuple[str, list[float], list[float]]]:
    cases = [
        ("the same order", [1.0, 2.0, 3.0], [10.0, 20.0, 30.0]),
        ("a reversed order", [1.0, 2.0, 3.0, 4.0], [8.0, 6.0, 4.0, 2.0]),
        ("one swap", [85.3, 86.7, 88.8], [60.0, 58.8, 63.7]),
    ]
    lengths = [6, 8] + ([2, 3, 5, 9, 12] if hidden else [])
    for seed, n in enumerate(lengths):
        rng = random.Random(900 + seed if seed < 2 else hidden_seed(900) + seed)
        x = [float(rng.randint(0, 3)) for _ in range(n)]  # few values: ties in both
        y = [float(rng.randint(0, 3)) for _ in range(n)]
        if len(set(x)) > 1 and len(set(y)) > 1:
            cases.append((f"a seeded case with ties (x={x}, y={y})", x, y))
    cases.append(("a constant sequence (tau is undefined: NaN)", [1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    return cases


def _tau_a(x: Sequence[float], y: Sequence[float]) -> float:
    pairs = list(itertools.combinations(range(len(x)), 2))
    signed = sum(((x[i] > x[j]) - (x[i] < x[j])) * ((y[i] > y[j]) - (y[i] < y[j]))
                 for i, j in pairs)
    return signed / len(pairs)


@checker(reference=_kendall_tau)
def check_kendall_tau(kendall: Callable[[list, list], float], hidden: bool = False) -> None:
    """``kendall(x, y)``: Kendall's tau-b of two lists of floats."""
    for case, x, y in _tau_cases(hidden):
        got = _number("kendall_tau(x, y)", call_student(kendall, list(x), list(y), case=case), case)
        want = _kendall_tau(x, y)
        if not _close(got, want):
            hint = ""
            if math.isnan(want):
                hint = (" -- a constant list has no untied pair, so tau-b is undefined: return "
                        "float('nan'), not a number that looks like an answer")
            elif _close(got, _tau_a(x, y)):
                hint = (" -- that is tau-a, (C - D) / (n (n - 1) / 2); with ties tau-b divides by "
                        "sqrt((C + D + T_x) (C + D + T_y)), T_x the pairs tied only in x")
            elif not math.isnan(want) and _close(got, -want):
                hint = " -- the sign is flipped: concordant pairs count +1"
            raise ExerciseError(f"kendall_tau(x, y) on {case} is {got:.6g}, expected "
                                f"{want:.6g}{hint}")
    passed(9, 2, "your Kendall tau-b equals ssast_teach.ablations.kendall_tau, ties included")


# ---------------------------------------------------------------------------- exercise 3


def _outcomes(rng: np.random.Generator, n: int, seeds: int, p: float, difficulty: np.ndarray,
              noise: float) -> np.ndarray:
    """(seeds, n) 0/1: a model right on the clips easier than ``p`` (plus per-seed noise); two
    models given the same ``difficulty`` are correlated, as two models on the same clips are."""
    return np.stack([difficulty + noise * rng.standard_normal(n) < p
                     for _ in range(seeds)]).astype(np.int64)


def _paired_cases(hidden: bool) -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(940)
    u = rng.random(400)
    cases = [
        ("300 clips, a deterministic A (3 identical seeds) against B (1 seed)",
         np.repeat(_outcomes(rng, 300, 1, 0.7, u[:300], 0.0), 3, axis=0),
         _outcomes(rng, 300, 1, 0.6, u[:300], 0.05)),
        ("400 clips, 3 seeds each, A a little better",
         _outcomes(rng, 400, 3, 0.6, u, 0.1), _outcomes(rng, 400, 3, 0.55, u, 0.1)),
    ]
    cases.append(_one_sided(200, 2, rng))
    if hidden:
        rng = np.random.default_rng(hidden_seed(941))
        for _ in range(3):
            n, sa, sb = int(rng.integers(60, 600)), int(rng.integers(1, 4)), int(rng.integers(1, 4))
            u = rng.random(n)
            pa, pb = rng.uniform(0.3, 0.8, size=2)
            cases.append((f"{n} clips, {sa} vs {sb} seeds, accuracies near {pa:.2f} and {pb:.2f}",
                          _outcomes(rng, n, sa, pa, u, 0.1), _outcomes(rng, n, sb, pb, u, 0.1)))
        cases.append(_one_sided(int(rng.choice([300, 400])), 2, rng))
    return cases


def _one_sided(n: int, extra: int, rng: np.random.Generator) -> tuple[str, np.ndarray, np.ndarray]:
    """A right wherever B is, and on ``extra`` more of ``n`` clips: every per-clip difference
    is 0 or 1, skewed and bounded, so no resample averages below 0, while a normal
    approximation (diff +- 1.96 SE) reaches below it. With 2 extra clips of 200, 300 or 400,
    the resampled count of wins is 0 with probability about 0.135 and 5 or fewer with about
    0.984: the bootstrap's 2.5 % and 97.5 % quantiles (0 and 5 wins) do not depend on its draws."""
    b = (rng.random(n) < 0.6).astype(np.int64)
    a = b.copy()
    a[rng.choice(np.flatnonzero(b == 0), extra, replace=False)] = 1
    return (f"{n} clips, A right wherever B is and on {extra} more (1 seed each)", a[None], b[None])


def _triple(fn: Callable, a: np.ndarray, b: np.ndarray, case: str,
            **kwargs: int) -> tuple[float, float, float]:
    got = call_student(fn, a.copy(), b.copy(), case=case, **kwargs)
    if not isinstance(got, tuple | list) or len(got) != 3:
        raise ExerciseError(f"paired_interval on {case} should return (diff, low, high), got "
                            f"{got!r}")
    values = [_number(f"paired_interval's {name}", float(v) if isinstance(v, np.floating) else v,
                      case) for name, v in zip(("diff", "low", "high"), got, strict=True)]
    if not all(math.isfinite(v) for v in values):
        raise ExerciseError(f"paired_interval on {case} returned {values}: not finite")
    return values[0], values[1], values[2]


_RESAMPLES = 20_000


def _check_interval(fn: Callable, case: str, a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    # many resamples, so Monte-Carlo noise cannot hide a 90 % interval from a 95 % one
    diff, low, high = _triple(fn, a, b, case, n_resamples=_RESAMPLES)
    want = float(a.mean(axis=0).mean() - b.mean(axis=0).mean())
    if not math.isclose(diff, want, abs_tol=1e-9):
        hint = ""
        if math.isclose(diff, -want, abs_tol=1e-9):
            hint = " -- the sign is flipped: A - B"
        elif math.isclose(diff, 100 * want, abs_tol=1e-7):
            hint = " -- that is in points (%); return a fraction of the clips"
        raise ExerciseError(f"paired_interval on {case}: diff is {diff:.6g}, expected the accuracy "
                            f"difference {want:.6g}{hint}")
    if not low <= diff <= high:
        raise ExerciseError(f"paired_interval on {case}: the interval [{low:.4g}, {high:.4g}] "
                            f"does not contain the difference {diff:.4g}")
    per_clip = a.mean(axis=0) - b.mean(axis=0)  # (n_clips,)
    if low < per_clip.min() - 1e-12 or high > per_clip.max() + 1e-12:
        raise ExerciseError(
            f"paired_interval on {case}: [{low:.4f}, {high:.4f}] reaches beyond "
            f"[{per_clip.min():.4g}, {per_clip.max():.4g}], the range of the per-clip differences: "
            "no resampled test set can average outside it, so a percentile bootstrap never does. "
            "That is a normal approximation (diff +- 1.96 SE), which assumes a symmetric, "
            "unbounded spread; the bootstrap interval is the 2.5 % and 97.5 % quantiles of the "
            "resampled differences themselves")
    ref = paired_bootstrap(a, b, n_resamples=_RESAMPLES, seed=7)
    width, ref_width = high - low, ref.high - ref.low
    tol = max(0.05 * ref_width, 0.002)  # measured: 20 000 resamples move an end <= 2.5 % of it
    if abs(low - ref.low) > tol or abs(high - ref.high) > tol:
        hint = ""
        if width > 1.5 * ref_width:
            hint = (" -- it is too wide: resampling A's and B's clips independently throws the "
                    "pairing away; draw one set of clip indices and use it for both")
        elif width < 0.75 * ref_width:
            hint = (" -- it is too narrow: average each clip over its seeds first, then resample "
                    "clips (seeds x clips are not independent clips)")
        elif width < 0.95 * ref_width:
            hint = (" -- it is a little narrow: the 2.5 % and 97.5 % quantiles of the resampled "
                    "differences make a 95 % interval (0.05 and 0.95 make a 90 % one), and each "
                    "clip is averaged over its seeds before the clips are resampled")
        raise ExerciseError(f"paired_interval on {case}: [{low:.4f}, {high:.4f}], expected about "
                            f"[{ref.low:.4f}, {ref.high:.4f}] (ssast_teach.stats.paired_bootstrap, "
                            f"within {tol:.4f}){hint}")
    return diff, low, high


@checker()
def check_paired_interval(paired_interval: Callable, hidden: bool = False) -> None:
    """``paired_interval(correct_a, correct_b)`` -> ``(diff, low, high)``: the accuracy
    difference A - B of two ``(n_seeds, n_clips)`` 0/1 arrays and its 95 % paired bootstrap
    interval over clips."""
    for case, a, b in _paired_cases(hidden):
        diff, low, high = _check_interval(paired_interval, case, a, b)
        s_diff, s_low, s_high = _check_interval(paired_interval, f"{case}, A and B swapped", b, a)
        tol = max(0.2 * (high - low), 0.005)
        if not (math.isclose(s_diff, -diff, abs_tol=1e-9) and abs(s_low + high) <= tol
                and abs(s_high + low) <= tol):
            raise ExerciseError(f"paired_interval on {case}: swapping A and B gave ({s_diff:.4f}, "
                                f"{s_low:.4f}, {s_high:.4f}), expected about ({-diff:.4f}, "
                                f"{-high:.4f}, {-low:.4f}): the comparison should be symmetric")
        same = _triple(paired_interval, a, a, f"{case}, A against itself")
        if same[0] != 0 or not same[1] <= 0 <= same[2]:
            raise ExerciseError(f"paired_interval on {case}, A against itself, gave {same}: a "
                                "model against itself differs by 0 on every resample")
        better = a.copy()
        wrong = np.flatnonzero(better.min(axis=0) == 0)[: max(1, a.shape[1] // 10)]
        better[:, wrong] = 1  # A right on a tenth more clips, B unchanged: a larger true gap
        up = _triple(paired_interval, better, b, f"{case}, A right on {wrong.size} more clips")
        if not (up[0] > diff and up[1] > low):
            raise ExerciseError(f"paired_interval on {case}: A right on {wrong.size} more clips "
                                f"gave ({up[0]:.4f}, {up[1]:.4f}, {up[2]:.4f}), the original "
                                f"({diff:.4f}, {low:.4f}, {high:.4f}): a larger gap should move "
                                "the difference and the interval's low end up")
    passed(9, 3, "your paired interval is symmetric, 0 for a model against itself, moves with "
                 "the gap, and agrees with ssast_teach.stats.paired_bootstrap")


# ---------------------------------------------------------------------------- exercise 4


def _se_cases(hidden: bool) -> list[tuple[str, tuple[float, int, float, int]]]:
    cases = [(0.8, 80, 0.7, 80), (0.305, 200, 0.335, 200)]
    if hidden:
        rng = random.Random(hidden_seed(930))
        cases += [(1.0, 50, 0.9, 50), (0.5, 10, 0.5, 1000)]
        cases += [(round(rng.uniform(0.2, 0.9), 3), rng.randint(20, 500),
                   round(rng.uniform(0.2, 0.9), 3), rng.randint(20, 500)) for _ in range(3)]
    return [(f"acc_a={a}, n_a={na}, acc_b={b}, n_b={nb}", (a, na, b, nb)) for a, na, b, nb in cases]


@checker()
def check_difference_in_se(fn: Callable[[float, int, float, int], float],
                           hidden: bool = False) -> None:
    """``fn(acc_a, n_a, acc_b, n_b)``: the gap ``acc_a - acc_b`` in standard errors."""
    for case, (a, na, b, nb) in _se_cases(hidden):
        got = _number("difference_in_se(...)", call_student(fn, a, na, b, nb, case=case), case)
        want = _difference_in_se(a, na, b, nb)
        if not _close(got, want):
            se_a, se_b = math.sqrt(a * (1 - a) / na), math.sqrt(b * (1 - b) / nb)
            hint = ""
            if (se_a + se_b) and _close(got, (a - b) / (se_a + se_b)):
                hint = (" -- standard errors do not add; variances do: sqrt(se_a^2 + se_b^2)")
            elif _close(got, -want):
                hint = " -- the sign is flipped: acc_a - acc_b"
            raise ExerciseError(f"difference_in_se on {case} is {got:.6g}, expected "
                                f"{want:.6g}{hint}")
    passed(9, 4, "your gap in standard errors equals ssast_teach.ablations.difference_in_se")
