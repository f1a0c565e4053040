"""Checkers for chapter 09 (the ablations): ranking agreement, the README's averages, and how
many standard errors separate two accuracies.

The references are :func:`ssast_teach.ablations.kendall_tau`,
:func:`ssast_teach.ablations.readme_averages` and :func:`ssast_teach.ablations.difference_in_se`.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Sequence

from ssast_teach.ablations import difference_in_se, kendall_tau, readme_averages
from ssast_teach.checkpoints import published_results
from ssast_teach.exercises import ExerciseError, call_student, checker, passed


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


def _tau_cases(hidden: bool) -> list[tuple[str, list[float], list[float]]]:
    cases = [
        ("the same order", [1.0, 2.0, 3.0], [10.0, 20.0, 30.0]),
        ("a reversed order", [1.0, 2.0, 3.0, 4.0], [8.0, 6.0, 4.0, 2.0]),
        ("one swap", [85.3, 86.7, 88.8], [60.0, 58.8, 63.7]),
    ]
    lengths = [6, 8] + ([2, 3, 5, 9, 12] if hidden else [])
    for seed, n in enumerate(lengths):
        rng = random.Random(900 + seed)
        x = [float(rng.randint(0, 3)) for _ in range(n)]  # few values: ties in both
        y = [float(rng.randint(0, 3)) for _ in range(n)]
        if len(set(x)) > 1 and len(set(y)) > 1:
            cases.append((f"seeded case {900 + seed} with ties (x={x}, y={y})", x, y))
    if hidden:
        cases.append(("a constant sequence (tau is undefined: NaN)", [1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    return cases


def _tau_a(x: Sequence[float], y: Sequence[float]) -> float:
    pairs = list(itertools.combinations(range(len(x)), 2))
    signed = sum(((x[i] > x[j]) - (x[i] < x[j])) * ((y[i] > y[j]) - (y[i] < y[j]))
                 for i, j in pairs)
    return signed / len(pairs)


@checker()
def check_kendall_tau(kendall: Callable[[list, list], float], hidden: bool = False) -> None:
    """``kendall(x, y)``: Kendall's tau-b of two lists of floats."""
    for case, x, y in _tau_cases(hidden):
        got = _number("kendall_tau(x, y)", call_student(kendall, list(x), list(y), case=case), case)
        want = kendall_tau(x, y)
        if not _close(got, want):
            hint = ""
            if not math.isnan(want) and _close(got, _tau_a(x, y)):
                hint = (" -- that is tau-a, (C - D) / (n (n - 1) / 2); with ties tau-b divides by "
                        "sqrt((C + D + T_x) (C + D + T_y)), T_x the pairs tied only in x")
            elif not math.isnan(want) and _close(got, -want):
                hint = " -- the sign is flipped: concordant pairs count +1"
            raise ExerciseError(f"kendall_tau(x, y) on {case} is {got:.6g}, expected "
                                f"{want:.6g}{hint}")
    passed(9, 1, "your Kendall tau-b equals ssast_teach.ablations.kendall_tau, ties included")


# ---------------------------------------------------------------------------- exercise 2


def _average_cases(hidden: bool) -> list[tuple[str, dict[str, str]]]:
    rows = {r["model"]: r for r in published_results()}
    names = ["SSAST-Base-Patch-400", "audio_model_gen", "SSAST-Small-Patch-400"]
    if hidden:
        names = list(rows)
    return [(f"the published row of {n}", dict(rows[n])) for n in names]


@checker()
def check_readme_averages(averages: Callable[[dict], tuple], hidden: bool = False) -> None:
    """``averages(row)``: ``(average audio, average speech)`` of one CSV row, None if missing."""
    for case, row in _average_cases(hidden):
        got = call_student(averages, dict(row), case=case)
        want = readme_averages(row)
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
    passed(9, 2, "your averages are the README's, recomputed from the per-task numbers")


# ---------------------------------------------------------------------------- exercise 3


def _se_cases(hidden: bool) -> list[tuple[str, tuple[float, int, float, int]]]:
    cases = [(0.8, 80, 0.7, 80), (0.305, 200, 0.335, 200)]
    if hidden:
        cases += [(1.0, 50, 0.9, 50), (0.5, 10, 0.5, 1000), (0.62, 80, 0.41, 200)]
    return [(f"acc_a={a}, n_a={na}, acc_b={b}, n_b={nb}", (a, na, b, nb)) for a, na, b, nb in cases]


@checker()
def check_difference_in_se(fn: Callable[[float, int, float, int], float],
                           hidden: bool = False) -> None:
    """``fn(acc_a, n_a, acc_b, n_b)``: the gap ``acc_a - acc_b`` in standard errors."""
    for case, (a, na, b, nb) in _se_cases(hidden):
        got = _number("difference_in_se(...)", call_student(fn, a, na, b, nb, case=case), case)
        want = difference_in_se(a, na, b, nb)
        if not _close(got, want):
            se_a, se_b = math.sqrt(a * (1 - a) / na), math.sqrt(b * (1 - b) / nb)
            hint = ""
            if (se_a + se_b) and _close(got, (a - b) / (se_a + se_b)):
                hint = (" -- standard errors do not add; variances do: sqrt(se_a^2 + se_b^2)")
            elif _close(got, -want):
                hint = " -- the sign is flipped: acc_a - acc_b"
            raise ExerciseError(f"difference_in_se on {case} is {got:.6g}, expected "
                                f"{want:.6g}{hint}")
    passed(9, 3, "your gap in standard errors equals ssast_teach.ablations.difference_in_se")
