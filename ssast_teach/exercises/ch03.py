"""Checkers for chapter 03 (masking): a random mask, masking frequency, one cluster's ids.

A random mask cannot be compared value by value with the library's (a student may draw it
any way), so :func:`check_random_mask` checks what a mask must be: ids in range, distinct,
sorted, reproducible from the generator alone, and uniform over many clips.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ssast_teach.exercises import ExerciseError, call_student, check_tensor, checker, passed
from ssast_teach.masking import cluster_mask, masking_frequency

# (batch, num_patches, mask_patch)
RANDOM_CASES = [(3, 16, 4), (2, 512, 400), (1, 10, 10)]
RANDOM_HIDDEN = [(5, 64, 1), (4, 100, 73), (2, 1, 1)]
UNIFORM_CLIPS = 4000  # clips drawn to test uniformity; frequency std <= 0.008 per id


def _mask_problem(got: Any, batch: int, num_patches: int, mask_patch: int) -> str:
    """What is wrong with a mask tensor, or "" if it is a valid mask."""
    if not isinstance(got, torch.Tensor):
        return f"should be a torch.Tensor, got {type(got).__name__}"
    if got.dtype != torch.long:
        return f"has dtype {got.dtype}, expected torch.int64 (a LongTensor of patch ids)"
    if tuple(got.shape) != (batch, mask_patch):
        return f"has shape {tuple(got.shape)}, expected (batch, mask_patch) = {(batch, mask_patch)}"
    if got.min() < 0 or got.max() >= num_patches:
        return f"holds ids outside [0, num_patches) = [0, {num_patches})"
    ordered = got.sort(dim=1).values  # (B, M)
    if bool((ordered[:, 1:] == ordered[:, :-1]).any()):
        return "repeats an id within a clip: draw WITHOUT replacement"
    if not torch.equal(got, ordered):
        return "is not sorted ascending within each clip (sort each row)"
    return ""


def _draw(
    fn: Callable[..., Any], case: tuple[int, int, int], seed: int, name: str, salt: int
) -> Any:
    """The student's mask from a generator seeded ``seed``; the global RNG is seeded with
    ``salt`` (a different one per call, so a mask drawn from it is caught) and restored after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1000 + salt)
        generator = torch.Generator().manual_seed(seed)
        return call_student(fn, *case, generator=generator, case=name)


@checker()
def check_random_mask(fn: Callable[..., Any], hidden: bool = False) -> None:
    """``fn(batch, num_patches, mask_patch, generator=None) -> LongTensor (batch, mask_patch)``."""
    cases = RANDOM_HIDDEN if hidden else RANDOM_CASES
    for case in cases:
        name = f"batch={case[0]}, num_patches={case[1]}, mask_patch={case[2]}"
        got = _draw(fn, case, seed=0, name=name, salt=0)
        problem = _mask_problem(got, *case)
        if problem:
            raise ExerciseError(f"random_mask({name}) {problem}")
        again = _draw(fn, case, seed=0, name=name, salt=1)
        if not torch.equal(got, again):
            raise ExerciseError(
                f"random_mask({name}) gives different masks from two generators with the same "
                "seed: draw every random number from `generator` (e.g. torch.rand(..., "
                "generator=generator)), not from the global RNG"
            )
        if case[2] < case[1]:
            other = _draw(fn, case, seed=1, name=name, salt=2)
            if torch.equal(got, other):
                raise ExerciseError(
                    f"random_mask({name}) gives the same mask for generator seeds 0 and 1: "
                    "the mask must be random"
                )
    _check_uniform(fn, num_patches=20 if hidden else 16, mask_patch=7 if hidden else 4)
    what = "hidden cases" if hidden else "seeded cases and a uniformity test"
    passed(3, 1, f"random_mask draws valid, reproducible, uniform masks ({what})")


def _check_uniform(fn: Callable[..., Any], num_patches: int, mask_patch: int) -> None:
    """Every id masked with probability M/N; adjacent ids together with M(M-1)/(N(N-1))."""
    name = f"batch={UNIFORM_CLIPS}, num_patches={num_patches}, mask_patch={mask_patch}"
    got = _draw(fn, (UNIFORM_CLIPS, num_patches, mask_patch), seed=7, name=name, salt=3)
    problem = _mask_problem(got, UNIFORM_CLIPS, num_patches, mask_patch)
    if problem:
        raise ExerciseError(f"random_mask({name}) {problem}")
    dense = torch.zeros(UNIFORM_CLIPS, num_patches).scatter_(1, got, 1.0)  # (B, N)
    freq = dense.mean(0)  # (N,)
    p = mask_patch / num_patches
    worst = int((freq - p).abs().argmax())
    if abs(freq[worst].item() - p) > 0.06:
        raise ExerciseError(
            f"random_mask is not uniform: over {UNIFORM_CLIPS} clips id {worst} is masked in "
            f"{freq[worst].item():.1%} of clips, expected {p:.1%} for every id (id 0 included)"
        )
    together = (dense[:, 1:] * dense[:, :-1]).mean().item()
    expected = p * (mask_patch - 1) / (num_patches - 1)
    if abs(together - expected) > 0.03:
        raise ExerciseError(
            f"random_mask does not draw ids independently of their neighbours: adjacent ids "
            f"are masked together in {together:.1%} of cases, expected {expected:.1%} for "
            "mask_patch ids drawn uniformly without replacement"
        )


FREQ_CASES = [(64, 8, 64, 400), (10, 4, 8, 20), (1, 2, 3, 4)]  # (clips, f_dim, t_dim, mask_patch)
FREQ_HIDDEN = [(33, 8, 64, 100), (7, 1, 512, 400), (50, 3, 5, 2)]


@checker()
def check_masking_frequency(fn: Callable[..., Any], hidden: bool = False) -> None:
    """``fn(mask_ids (B, M), f_dim, t_dim) -> FloatTensor (f_dim, t_dim)``."""
    cases = FREQ_HIDDEN if hidden else FREQ_CASES
    for k, (clips, f_dim, t_dim, mask_patch) in enumerate(cases):
        generator = torch.Generator().manual_seed(50 + 10 * hidden + k)
        mask_ids = cluster_mask(clips, f_dim * t_dim, mask_patch, t_dim, generator)  # (B, M)
        name = f"{clips} masks of {mask_patch} ids on a {f_dim} x {t_dim} grid"
        got = call_student(fn, mask_ids.clone(), f_dim, t_dim, case=name)
        expected = masking_frequency(mask_ids, f_dim, t_dim)  # (f_dim, t_dim)
        comparable = isinstance(got, torch.Tensor) and got.is_floating_point()
        if (
            comparable
            and got.shape == expected.shape
            and not torch.allclose(got.double(), expected.double())
        ):
            if torch.allclose(got.double(), expected.double() * clips) and clips > 1:
                raise ExerciseError(
                    f"masking_frequency on {name} returns counts; divide by the number of "
                    "clips to get the fraction of clips in which each cell is masked"
                )
            if torch.allclose(got.double(), expected.double().flatten().view(t_dim, f_dim).T):
                raise ExerciseError(
                    f"masking_frequency on {name} puts id = t_col * f_dim + f_row; the "
                    "official order is id = f_row * t_dim + t_col (reshape to (f_dim, t_dim))"
                )
        elif comparable and got.shape != expected.shape and got.numel() == expected.numel():
            raise ExerciseError(
                f"masking_frequency on {name} has shape {tuple(got.shape)}, expected "
                f"(f_dim, t_dim) = {tuple(expected.shape)}: reshape the per-id frequencies"
            )
        check_tensor("masking_frequency(...)", got, expected, case=name, atol=1e-6, rtol=0)
    what = "hidden cases" if hidden else "seeded cluster masks"
    passed(3, 2, f"masking_frequency matches ssast_teach.masking on {len(cases)} {what}")


# (start, c, t_dim, num_patches, wrap_rows): inside the grid, at a row end (wraps or is
# clipped), at id 0 (never masked), at the bottom (cells dropped), a one-row frame grid.
CLUSTER_CASES = [
    (70, 3, 64, 512, True),
    (62, 4, 64, 512, True),
    (62, 4, 64, 512, False),
    (0, 3, 64, 512, True),
    (470, 5, 64, 512, True),
]
CLUSTER_HIDDEN = [
    (511, 3, 64, 512, True),
    (7, 5, 8, 32, True),
    (7, 5, 8, 32, False),
    (1, 1, 8, 32, False),
    (300, 4, 512, 512, True),
    (510, 4, 512, 512, False),
]


def _official_cluster_ids(
    start: int, c: int, t_dim: int, num_patches: int, wrap_rows: bool
) -> list[int]:
    """The ids a ``c x c`` cluster starting at ``start`` adds in the official algorithm."""
    i = torch.arange(c)[:, None]  # (c, 1) frequency rows
    j = torch.arange(c)[None, :]  # (1, c) time columns, not bounded by the row unless asked
    ids = start + t_dim * i + j  # (c, c)
    keep = (ids > 0) & (ids < num_patches)  # (c, c)
    if not wrap_rows:
        keep &= start % t_dim + j < t_dim
    return sorted(int(v) for v in ids[keep])


@checker()
def check_cluster_ids(fn: Callable[..., Any], hidden: bool = False) -> None:
    """``fn(start, c, t_dim, num_patches, wrap_rows=True) -> sorted list of one cluster's ids``."""
    cases = CLUSTER_HIDDEN if hidden else CLUSTER_CASES
    for start, c, t_dim, n, wrap_rows in cases:
        name = f"start={start}, c={c}, t_dim={t_dim}, num_patches={n}, wrap_rows={wrap_rows}"
        got = call_student(fn, start, c, t_dim, n, wrap_rows=wrap_rows, case=name)
        if isinstance(got, torch.Tensor):
            got = got.tolist()
        if not isinstance(got, (list, tuple)) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in got
        ):
            raise ExerciseError(f"cluster_ids({name}) should return a list of ints, got {got!r}")
        got = list(got)
        expected = _official_cluster_ids(start, c, t_dim, n, wrap_rows)
        if got == expected:
            continue
        if sorted(set(got)) == expected:
            raise ExerciseError(
                f"cluster_ids({name}) has the right ids but returns them unsorted or repeated: "
                "return sorted(set(...))"
            )
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        hints = []
        if 0 in extra:
            hints.append("id 0 is never masked (the official code keeps 0 < id)")
        if any(v >= n for v in extra):
            hints.append("ids >= num_patches are past the end of the grid: drop them")
        crosses = start % t_dim + c > t_dim
        if wrap_rows and missing and crosses:
            hints.append(
                "the official cluster does not stop at the row end: cell (i, j) is "
                "start + t_dim*i + j for every j < c, so it wraps into the next row"
            )
        if not wrap_rows and extra and crosses:
            hints.append(
                "with wrap_rows=False the cluster stops at the row end: keep cell (i, j) "
                "only if start % t_dim + j < t_dim"
            )
        hint = ("; " + "; ".join(hints)) if hints else ""
        raise ExerciseError(
            f"cluster_ids({name}) is wrong: missing {missing}, unexpected {extra}{hint}"
        )
    what = "hidden cases" if hidden else "cases: inside, at a row end, at id 0 and at the end"
    passed(3, 3, f"cluster_ids matches the official cluster on {len(cases)} {what}")
