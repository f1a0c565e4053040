"""Checkers for chapter 03 (masking): the official per-clip frame and cluster masks, a batched
random mask, the masking frequency, and the extension, a cluster mask with flat row coverage.

The per-clip masks draw from a seeded ``random.Random``, so they are compared with the official
algorithm draw for draw. A batched random mask cannot be compared value by value with the
library's (a student may draw it any way), so :func:`check_random_mask` checks what a mask must
be: ids in range, distinct, sorted, reproducible from the generator alone, and uniform over
many clips; :func:`check_flat_cluster_mask` checks its properties statistically. Hidden cases
are drawn from :func:`hidden_seed`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from ssast_teach.exercises import (
    ExerciseError,
    call_student,
    check_tensor,
    checker,
    hidden_seed,
    passed,
)
from ssast_teach.masking import cluster_mask, masking_frequency, random_mask, set_table_size

__all__ = [
    "check_cluster_mask_one_clip",
    "check_flat_cluster_mask",
    "check_frame_mask_one_clip",
    "check_masking_frequency",
    "check_random_mask",
]

# (batch, num_patches, mask_patch)
RANDOM_CASES = [(3, 16, 4), (2, 512, 400), (1, 10, 10)]
RANDOM_HIDDEN = [(5, 64, 1), (2, 1, 1)]  # and two cases drawn from the grader's seed
UNIFORM_CLIPS = 10000  # clips drawn to test uniformity; frequency std <= 0.005 per id
UNIFORM_MAX_Z = 5.0  # no id's frequency more than 5 standard errors from mask_patch / N
# ...and the mean squared z over the ids (about 1 for a uniform mask) below 1 + 5 sd of it:
# scores shifted by 0.05 for one id, or by 0.05 * id / N, fail one of the two (measured)
LOOP_BATCHES = (2, 40)  # a vectorised mask makes as many torch calls for either batch


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


def _random_hidden() -> list[tuple[int, int, int]]:
    g = torch.Generator().manual_seed(hidden_seed(31))
    cases = list(RANDOM_HIDDEN)
    for _ in range(2):
        batch, num_patches = int(torch.randint(1, 6, (1,), generator=g)), int(
            torch.randint(2, 600, (1,), generator=g)
        )
        cases.append((batch, num_patches, int(torch.randint(1, num_patches, (1,), generator=g))))
    return cases


@checker(reference=random_mask)
def check_random_mask(fn: Callable[..., Any], hidden: bool = False) -> None:
    """``fn(batch, num_patches, mask_patch, generator=None) -> LongTensor (batch, mask_patch)``."""
    cases = _random_hidden() if hidden else RANDOM_CASES
    seed = hidden_seed(0) if hidden else 0
    for case in cases:
        name = f"batch={case[0]}, num_patches={case[1]}, mask_patch={case[2]}"
        got = _draw(fn, case, seed=seed, name=name, salt=0)
        problem = _mask_problem(got, *case)
        if problem:
            raise ExerciseError(f"random_mask({name}) {problem}")
        again = _draw(fn, case, seed=seed, name=name, salt=1)
        if not torch.equal(got, again):
            raise ExerciseError(
                f"random_mask({name}) gives different masks from two generators with the same "
                "seed: draw every random number from `generator` (e.g. torch.rand(..., "
                "generator=generator)), not from the global RNG"
            )
        if case[2] < case[1]:
            other = _draw(fn, case, seed=seed + 1, name=name, salt=2)
            if torch.equal(got, other):
                raise ExerciseError(
                    f"random_mask({name}) gives the same mask for two generator seeds: "
                    "the mask must be random"
                )
    _check_no_loop(fn, num_patches=20 if hidden else 16, mask_patch=7 if hidden else 4)
    _check_uniform(fn, num_patches=20 if hidden else 16, mask_patch=7 if hidden else 4)
    what = "hidden cases" if hidden else "seeded cases and a uniformity test"
    passed(3, 3, f"random_mask draws valid, reproducible, uniform masks ({what})")


class _TorchCalls(TorchFunctionMode):
    """Counts the torch functions and tensor methods called while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        self.calls += 1
        return func(*args, **(kwargs or {}))


def _check_no_loop(fn: Callable[..., Any], num_patches: int, mask_patch: int) -> None:
    """A loop over clips makes torch calls in proportion to the batch; tensors over the whole
    batch make the same calls for any batch."""
    calls = []
    for batch in LOOP_BATCHES:
        name = f"batch={batch}, num_patches={num_patches}, mask_patch={mask_patch}"
        with _TorchCalls() as counter:
            _draw(fn, (batch, num_patches, mask_patch), seed=5, name=name, salt=4)
        calls.append(counter.calls)
    if calls[1] > calls[0]:
        raise ExerciseError(
            f"random_mask loops over clips: it makes {calls[0]} torch calls for a batch of "
            f"{LOOP_BATCHES[0]} clips and {calls[1]} for {LOOP_BATCHES[1]}; draw the masks of "
            "the whole batch with tensor operations, the same calls for any batch"
        )


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
    z = (freq - p) / (p * (1 - p) / UNIFORM_CLIPS) ** 0.5  # (N,) standard errors off
    worst = int(z.abs().argmax())
    mean_z2_max = 1 + 5 * (2 / num_patches) ** 0.5
    if abs(z[worst].item()) > UNIFORM_MAX_Z or (z**2).mean().item() > mean_z2_max:
        raise ExerciseError(
            f"random_mask is not uniform: over {UNIFORM_CLIPS} clips id {worst} is masked in "
            f"{freq[worst].item():.1%} of clips ({z[worst].item():+.1f} standard errors; mean "
            f"squared {(z**2).mean().item():.1f}, at most {mean_z2_max:.1f} for a uniform "
            f"mask), expected {p:.1%} for every id (id 0 included): every id's score must "
            "come from the same distribution, with nothing added that depends on the id"
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
FREQ_HIDDEN = [(7, 1, 512, 400), (50, 3, 5, 2)]  # and cases drawn from the grader's seed


def _freq_hidden() -> list[tuple[int, int, int, int]]:
    g = torch.Generator().manual_seed(hidden_seed(41))
    cases = list(FREQ_HIDDEN)
    for _ in range(2):
        clips, f_dim, t_dim = (int(v) for v in torch.randint(2, 40, (3,), generator=g))
        f_dim, t_dim = 1 + f_dim % 8, 3 + t_dim
        cases.append((clips, f_dim, t_dim, int(torch.randint(1, f_dim * t_dim - 1, (1,),
                                                             generator=g))))  # fmt: skip
    return cases


@checker(reference=masking_frequency)
def check_masking_frequency(fn: Callable[..., Any], hidden: bool = False) -> None:
    """``fn(mask_ids (B, M), f_dim, t_dim) -> FloatTensor (f_dim, t_dim)``."""
    cases = _freq_hidden() if hidden else FREQ_CASES
    base = hidden_seed(60) if hidden else 50
    for k, (clips, f_dim, t_dim, mask_patch) in enumerate(cases):
        generator = torch.Generator().manual_seed(base + k)
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
    passed(3, 4, f"masking_frequency matches ssast_teach.masking on {len(cases)} {what}")




# ---------------------------------------------------------------------------------------------
# Exercise 1: the official frame mask of one clip


def _frame_mask_one_clip(num_patches: int, mask_patch: int, rng: random.Random) -> list[int]:
    return sorted(rng.sample(range(num_patches), mask_patch))


def _as_ids(got: Any, name: str) -> list[int]:
    if isinstance(got, torch.Tensor):
        got = got.tolist()
    if not isinstance(got, (list, tuple)) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in got
    ):
        raise ExerciseError(f"{name} should return a list of ints, got {got!r:.80}")
    return list(got)


def _ids_problem(ids: list[int], num_patches: int, mask_patch: int) -> str:
    if len(ids) != mask_patch:
        return f"returned {len(ids)} ids; a mask holds exactly mask_patch = {mask_patch}"
    if len(set(ids)) != len(ids):
        return "repeats an id: every id is masked at most once (without replacement)"
    if ids and (min(ids) < 0 or max(ids) >= num_patches):
        return f"holds ids outside [0, num_patches) = [0, {num_patches})"
    return ""


def _seeded(fn: Callable[..., Any], args: tuple, seed: int, name: str, salt: int) -> Any:
    """``fn(*args, random.Random(seed))`` with the module-level ``random`` seeded by ``salt``
    (a different one per call, so a mask drawn from it is caught) and restored after."""
    state = random.getstate()
    random.seed(9000 + salt)
    try:
        return call_student(fn, *args, random.Random(seed), case=name)
    finally:
        random.setstate(state)


FRAME_CASES = [(512, 400, 0), (16, 5, 1), (10, 10, 2), (1, 1, 3)]  # (N, M, seed)


@checker(reference=_frame_mask_one_clip)
def check_frame_mask_one_clip(fn: Callable[..., Any], hidden: bool = False) -> None:
    """``fn(num_patches, mask_patch, rng) -> sorted list of mask_patch ids``, the official
    frame mask (``rng.sample``), draw for draw."""
    cases = list(FRAME_CASES)
    if hidden:
        g = random.Random(hidden_seed(71))
        cases = [(n, g.randrange(1, n + 1), g.randrange(1 << 30))
                 for n in (g.randrange(1, 600) for _ in range(4))]  # fmt: skip
    for n, m, seed in cases:
        name = f"frame_mask_one_clip({n}, {m}, random.Random({seed}))"
        ids = _as_ids(_seeded(fn, (n, m), seed, name, salt=0), name)
        problem = _ids_problem(ids, n, m)
        if problem:
            raise ExerciseError(f"{name} {problem}")
        if ids != sorted(ids):
            raise ExerciseError(f"{name} is not sorted: return sorted(...)")
        again = _as_ids(_seeded(fn, (n, m), seed, name, salt=1), name)
        if again != ids:
            raise ExerciseError(
                f"{name} gives two different masks for two generators with the same seed: draw "
                "from `rng`, not from the `random` module itself"
            )
        if ids != _frame_mask_one_clip(n, m, random.Random(seed)):
            raise ExerciseError(
                f"{name} is a valid mask but not the official one for this seed: the official "
                "code calls rng.sample(range(num_patches), mask_patch) once, then sorts"
            )
    what = "hidden cases" if hidden else "cases: 400 of 512, a few, all, one"
    passed(3, 1, f"frame_mask_one_clip draws the official frame mask on {len(cases)} {what}")


# ---------------------------------------------------------------------------------------------
# Exercise 2: the official cluster mask of one clip


def _cluster_variant(
    num_patches: int,
    mask_patch: int,
    t_dim: int,
    rng: random.Random,
    *,
    exclude_first: bool = True,
    wrap: bool = True,
    more: bool = True,
    per_clip: bool = True,
    keep: str = "first",
) -> list[int]:
    """The official algorithm (the defaults) or one plausible mistake in it."""
    c = rng.randrange(3) + 3 if per_clip else 0
    ids: set[int] = set()
    while len(ids) <= mask_patch if more else len(ids) < mask_patch:
        if not per_clip:
            c = rng.randrange(3) + 3
        start = rng.randrange(num_patches)
        for i in range(c):
            for j in range(c):
                if not wrap and start % t_dim + j >= t_dim:
                    continue
                cell = start + t_dim * i + j
                if (0 < cell or (not exclude_first and cell == 0)) and cell < num_patches:
                    ids.add(cell)
    if keep == "all":  # every collected id, before the cut
        return list(ids)
    if keep == "first":
        return list(ids)[:mask_patch]
    if keep == "lowest":
        return sorted(ids)[:mask_patch]
    return sorted(ids)[-mask_patch:]


def _cluster_mask_one_clip(
    num_patches: int, mask_patch: int, t_dim: int, rng: random.Random
) -> list[int]:
    return _cluster_variant(num_patches, mask_patch, t_dim, rng)


CLUSTER_MISTAKES = [
    (dict(keep="lowest"), "you kept the lowest ids (sorted, then cut); the official code keeps "
     "the first mask_patch ids in the set's own iteration order, which is the ids' order only "
     "while the set's hash table has more slots than the largest id: here {count} ids, a table "
     "of {slots} slots, ids up to {largest}"),
    (dict(wrap=False), "your clusters stop at the row end; the official j is not bounded by "
     "the row, so a cluster that starts near the end of a row wraps into the next one"),
    (dict(more=False), "you stop at mask_patch ids; the official loop runs while "
     "len(ids) <= mask_patch, i.e. until MORE than mask_patch ids are collected"),
    (dict(exclude_first=False), "id 0 is never masked in the official code (0 < id < N)"),
    (dict(per_clip=False), "you draw a cluster size for every cluster; the official code "
     "draws c once per clip, before the first start"),
    (dict(keep="highest"), "you kept the highest ids; the official code keeps the first "
     "mask_patch ids in the set's own iteration order"),
]  # fmt: skip

# (num_patches, mask_patch, t_dim, seed): the pretraining grid, a small grid whose clusters
# often wrap or run off the bottom, a one-row grid, the most ids that can be asked for (N - 2),
# and small mask_patch (10 of 512, 16 of 64), where the set's order is not the ids' order
CLUSTER_CASES = [(512, 400, 64, 0), (32, 20, 8, 1), (32, 20, 8, 5), (16, 10, 16, 2),
                 (16, 14, 4, 3), (512, 10, 64, 0), (64, 16, 8, 1)]  # fmt: skip


def _cluster_hidden() -> list[tuple[int, int, int, int]]:
    g = random.Random(hidden_seed(81))
    cases = []
    for k in range(7):
        f_dim, t_dim = g.randrange(1, 9), g.randrange(4, 65)
        n = f_dim * t_dim
        low = 1 if k >= 5 else max(1, n // 4)  # the last two: any size, small ones included
        cases.append((n, g.randrange(low, n - 1), t_dim, g.randrange(1 << 30)))
    return cases


@checker(reference=_cluster_mask_one_clip)
def check_cluster_mask_one_clip(fn: Callable[..., Any], hidden: bool = False) -> None:
    """``fn(num_patches, mask_patch, t_dim, rng) -> list of mask_patch ids``, the official
    ``gen_maskid_patch`` (``src/models/ast_models.py``) draw for draw, compared as a set."""
    cases = _cluster_hidden() if hidden else CLUSTER_CASES
    for n, m, t_dim, seed in cases:
        name = f"cluster_mask_one_clip({n}, {m}, t_dim={t_dim}, random.Random({seed}))"
        ids = _as_ids(_seeded(fn, (n, m, t_dim), seed, name, salt=0), name)
        problem = _ids_problem(ids, n, m)
        if problem:
            hint = ""
            if len(ids) > m:
                hint = "; keep only the first mask_patch ids of the set: list(ids)[:mask_patch]"
            raise ExerciseError(f"{name} {problem}{hint}")
        if 0 in ids:
            raise ExerciseError(f"{name} masks id 0: the official code never does (0 < id < N)")
        again = _as_ids(_seeded(fn, (n, m, t_dim), seed, name, salt=1), name)
        if sorted(again) != sorted(ids):
            raise ExerciseError(
                f"{name} gives two different masks for two generators with the same seed: draw "
                "every random number from `rng`, not from the `random` module itself"
            )
        if set(ids) == set(_cluster_variant(n, m, t_dim, random.Random(seed))):
            continue
        everything = _cluster_variant(n, m, t_dim, random.Random(seed), keep="all")
        for flags, message in CLUSTER_MISTAKES:
            if set(ids) == set(_cluster_variant(n, m, t_dim, random.Random(seed), **flags)):
                raise ExerciseError(f"{name} is not the official mask: " + message.format(
                    count=len(everything), slots=set_table_size(len(everything)),
                    largest=max(everything)))  # fmt: skip
        raise ExerciseError(
            f"{name} is not the official mask for this seed: the official code draws from rng "
            "one cluster size per clip (3, 4 or 5, in that order of randrange) and then one "
            "start per cluster, nothing else; it keeps the cluster's ids with 0 < id < "
            "num_patches and stops once MORE than mask_patch distinct ids are collected"
        )
    what = "hidden cases" if hidden else "cases: 400 of 512, wrapping clusters, one row, N - 2"
    passed(3, 2, f"cluster_mask_one_clip draws the official cluster mask on {len(cases)} {what}")


# ---------------------------------------------------------------------------------------------
# Exercise 5 (extension): a cluster mask with flat row coverage, checked by its properties

# Tolerances from measurement (the worked solution: starts up to c - 1 rows and columns
# before the grid, clusters clipped to it, a uniform subset of mask_patch of the collected ids).
# Over 1500 clips at about 31% masked (8 x 32 and 8 x 24 grids, 5 seeds) the largest
# |row rate - mask_patch / N| was 0.010 (the official algorithm: 0.19; uniform random: 0.004),
# and P(right neighbour masked | masked) was 0.73 to 0.75 (official 0.79, uniform 0.31).
FLAT_CLIPS = 1200
FLAT_ROW_TOLERANCE = 0.03  # |row rate - mask_patch / N|
CLUSTERED_ABOVE_UNIFORM = 0.25  # P(right neighbour masked | masked) - mask_patch / N


def _flat_grid(hidden: bool) -> tuple[int, int, int, int]:
    """(f_dim, t_dim, mask_patch, seed): about 31% masked, where clusters show."""
    if not hidden:
        return 8, 32, 80, 0
    g = random.Random(hidden_seed(91))
    f_dim, t_dim = g.randrange(6, 9), g.randrange(20, 41)
    return f_dim, t_dim, round(0.31 * f_dim * t_dim), g.randrange(1 << 30)


@checker()
def check_flat_cluster_mask(fn: Callable[..., Any], hidden: bool = False) -> None:
    """``fn(num_patches, mask_patch, t_dim, rng) -> list of mask_patch ids``: clustered like
    the official mask, but every frequency row masked at about the rate mask_patch / N."""
    f_dim, t_dim, m, seed = _flat_grid(hidden)
    n = f_dim * t_dim
    # edge cases first: all ids but two, a one-row grid, c larger than the grid
    for args in [(n, n - 2, t_dim), (16, 6, 16), (4, 2, 2), (n, m, t_dim)]:
        name = f"flat_cluster_mask({args[0]}, {args[1]}, t_dim={args[2]}, random.Random({seed}))"
        ids = _as_ids(_seeded(fn, args, seed, name, salt=0), name)
        problem = _ids_problem(ids, args[0], args[1])
        if problem:
            raise ExerciseError(f"{name} {problem}")
        if sorted(_as_ids(_seeded(fn, args, seed, name, salt=1), name)) != sorted(ids):
            raise ExerciseError(
                f"{name} gives two different masks for two generators with the same seed: draw "
                "every random number from `rng`, not from the `random` module itself"
            )
        other = _as_ids(_seeded(fn, args, seed + 1, name, salt=2), name)
        if args == (n, m, t_dim) and sorted(other) == sorted(ids):
            raise ExerciseError(f"{name} gives the same mask for two seeds: it must be random")
    rng = random.Random(seed)
    dense = torch.zeros(FLAT_CLIPS, n)
    name = f"{FLAT_CLIPS} clips of flat_cluster_mask({n}, {m}, t_dim={t_dim}, rng)"
    for k in range(FLAT_CLIPS):
        ids = _as_ids(call_student(fn, n, m, t_dim, rng, case=name), name)
        problem = _ids_problem(ids, n, m)
        if problem:
            raise ExerciseError(f"clip {k} of {name} {problem}")
        dense[k, ids] = 1.0
    grid = dense.view(FLAT_CLIPS, f_dim, t_dim)
    rows = grid.mean((0, 2))  # (f_dim,) fraction of each row masked
    rate = m / n
    worst = int((rows - rate).abs().argmax())
    if abs(rows[worst].item() - rate) > FLAT_ROW_TOLERANCE:
        raise ExerciseError(
            f"over {name} row {worst} is masked at rate {rows[worst]:.3f}, expected "
            f"mask_patch / N = {rate:.3f} for every row (within {FLAT_ROW_TOLERANCE}); row "
            f"rates {[round(v, 2) for v in rows.tolist()]}. Clusters that start inside the "
            "grid and grow to higher ids reach the first rows and columns less often"
        )
    pairs = grid[:, :, :-1].sum()
    clustered = ((grid[:, :, 1:] * grid[:, :, :-1]).sum() / pairs).item()
    if clustered < rate + CLUSTERED_ABOVE_UNIFORM:
        raise ExerciseError(
            f"over {name} the right neighbour (same row) of a masked patch is masked in only "
            f"{clustered:.0%} of cases; a uniform random mask gives {rate:.0%}, c x c clusters "
            f"at least {rate + CLUSTERED_ABOVE_UNIFORM:.0%}: mask clusters, not single patches"
        )
    what = "hidden grid" if hidden else f"edge cases and {FLAT_CLIPS} clips"
    passed(3, 5, f"flat_cluster_mask is valid, reproducible, clustered and flat over rows "
                 f"({what})")  # fmt: skip
