"""Which patches to hide: the official masks, batched (chapter 03, masking).

SSAST pretraining replaces ``mask_patch`` of the ``N`` patch embeddings of each clip by a
learned ``mask_embed`` and asks the model to recover them. Which ids are hidden matters:

- Patch models (16x16 patches, ``cluster=True`` in the official code) hide *clusters*: squares
  of c x c neighbouring patches, c drawn once per clip from {3, 4, 5}. :func:`cluster_mask`.
- Frame models (128x2 patches, ``cluster=False``) hide ``mask_patch`` frames drawn uniformly
  without replacement. :func:`frame_mask`.

A mask is a ``LongTensor (B, M)`` of patch ids, ``id = f_row * t_dim + t_col`` (the order of
``Conv2d(...).flatten(2)``), distinct and sorted ascending within each row.

:func:`cluster_mask_reference` restates the official patch algorithm for one clip in plain
Python (``gen_maskid_patch`` in the official ``src/models/ast_models.py``);
:func:`cluster_mask` draws the same distribution for a whole batch at once. The official
algorithm has three quirks, each reproduced by default and correctable by a flag:

======================  ==========================================  ===========================
flag (default)          official behaviour                          corrected
======================  ==========================================  ===========================
``keep="set_order"``    keeps the first mask_patch collected ids    ``keep="random"``
                        in the Python set's iteration order
``exclude_first``       id 0 is never masked (``mask_cand > 0``)    ``exclude_first=False``
``wrap_rows``           a cluster past the row end wraps to the     ``wrap_rows=False`` clips
                        next frequency row                          it at the row end
======================  ==========================================  ===========================

The set's order: an int hashes to itself and CPython stores it in slot ``id % table_size``, so
while the set's table has more slots than the largest collected id, the set iterates in
increasing order and the LOWEST ids are kept; a set of D ids has a table of
:func:`set_table_size` (D) slots (512 for 77 to 306 ids, 2048 from 307), so this holds at every
course and official pretraining setting (400 of 512; 25, 62, 100 of 128) but not for small
``mask_patch`` (10 of 512: a table of 32 or 128 slots, ids in slot order, collisions probed).

The official mask is far from uniform over the grid (:func:`masking_frequency`, 8 x 64 grid,
mask_patch=400): a cluster grows down and right from a uniform start, so the top row is
hidden in about 41% of clips against 89% mid-grid, and the first columns less often too;
keeping the lowest ids then takes about 5 more points from the last row and up to 11 from
the last columns, and since the loop stops with MORE than mask_patch ids, the highest collected
id is always dropped: id N-1 is never masked. :func:`random_mask` is the comparison without any
quirk: ids uniformly without replacement over all ``N`` patches, id 0 included (it is also what
:func:`frame_mask` draws).
"""

from __future__ import annotations

import functools
import math
import operator
import random
from collections.abc import Sequence

import torch

KEEP_CHOICES = ("set_order", "random")


def _int_at_least(name: str, value: object, low: int) -> int:
    """``value`` as an int >= ``low``, or a ValueError that names the argument."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}") from None
    if value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value}")
    return value


def _check_t_dim(num_patches: int, t_dim: object) -> int:
    t_dim = _int_at_least("t_dim", t_dim, 1)
    if num_patches % t_dim:
        raise ValueError(f"t_dim={t_dim} must divide num_patches={num_patches} (N = f_dim * t_dim)")
    return t_dim


def _check_cluster_args(
    num_patches: object,
    mask_patch: object,
    t_dim: object,
    cluster_sizes: Sequence[int],
    exclude_first: bool,
) -> tuple[int, int, int, tuple[int, ...]]:
    num_patches = _int_at_least("num_patches", num_patches, 2)
    t_dim = _check_t_dim(num_patches, t_dim)
    if isinstance(cluster_sizes, (str, bytes)) or not isinstance(cluster_sizes, Sequence):
        raise ValueError(f"cluster_sizes must be a sequence of ints >= 1, got {cluster_sizes!r}")
    if len(cluster_sizes) == 0:
        raise ValueError("cluster_sizes must hold at least one cluster size, got ()")
    sizes = tuple(_int_at_least("cluster_sizes[]", c, 1) for c in cluster_sizes)
    # The loop stops only once MORE than mask_patch distinct ids are collected, so at most
    # (ids that can ever be masked) - 1 can be asked for; more would loop forever.
    available = num_patches - 1 if exclude_first else num_patches
    mask_patch = _int_at_least("mask_patch", mask_patch, 1)
    if mask_patch > available - 1:
        raise ValueError(
            f"mask_patch={mask_patch} is too large for num_patches={num_patches}: cluster "
            f"masking collects MORE than mask_patch of at most {available} maskable ids, "
            f"so mask_patch must be <= {available - 1}"
        )
    return num_patches, mask_patch, t_dim, sizes


def set_table_size(num_ids: int) -> int:
    """Slots in the hash table of a CPython ``set`` built by adding ``num_ids`` distinct ids.

    CPython's rule (``Objects/setobject.c``): a set starts with 8 slots; once an insertion
    leaves ``5 * used >= 3 * (slots - 1)``, the table grows to the smallest power of two above
    ``4 * used`` (``2 * used`` past 50000). It depends on the count only, not on the ids.
    """
    slots = 8
    for used in range(1, num_ids + 1):
        if 5 * used >= 3 * (slots - 1):
            slots = 1 << (used * (2 if used > 50000 else 4)).bit_length()
    return slots


def _add_cluster(
    ids: set[int], start: int, c: int, num_patches: int, t_dim: int,
    exclude_first: bool = True, wrap_rows: bool = True,
) -> None:  # fmt: skip
    """Add one c x c cluster to ``ids`` in the official order: rows i, then columns j."""
    first = 1 if exclude_first else 0
    for i in range(c):  # i: frequency rows down
        for j in range(c):  # j: time columns right, NOT bounded by the row: wraps
            if not wrap_rows and start % t_dim + j >= t_dim:
                continue
            patch_id = start + t_dim * i + j
            if first <= patch_id < num_patches:  # id 0 never masked; past the end dropped
                ids.add(patch_id)


def cluster_mask_reference(
    num_patches: int, mask_patch: int, t_dim: int, rng: random.Random
) -> list[int]:
    """One clip's cluster mask, the official ``gen_maskid_patch`` (``src/models/ast_models.py``)
    restated in plain Python: the same draws from ``rng``, the same ids in the same order.

    Slow (a Python loop per draw); it is here to read, and as the baseline that
    :func:`cluster_mask` must match in distribution and beat in speed.
    """
    num_patches, mask_patch, t_dim, _ = _check_cluster_args(
        num_patches, mask_patch, t_dim, (3, 4, 5), exclude_first=True
    )
    c = rng.randrange(3) + 3  # one cluster size for the whole clip
    collected: set[int] = set()
    while len(collected) <= mask_patch:  # "<=": stops only with MORE than mask_patch ids
        _add_cluster(collected, rng.randrange(num_patches), c, num_patches, t_dim)
    # The official code keeps the first mask_patch ids of a Python set built in this order:
    # the lowest ids while the set's table has more slots than the largest id, else slot order.
    return list(collected)[:mask_patch]


@functools.cache
def _set_table_sizes(num_patches: int) -> torch.Tensor:
    """``LongTensor (num_patches + 1,)``: :func:`set_table_size` of 0 to num_patches ids."""
    return torch.tensor([set_table_size(d) for d in range(num_patches + 1)])


def _draws_per_chunk(num_patches: int, mask_patch: int, t_dim: int, c_min: int) -> int:
    """Draws per chunk so that one chunk is nearly always enough (coupon collector, x1.6)."""
    cells = c_min * min(c_min, num_patches // t_dim)  # patches one smallest cluster covers
    need = num_patches / cells * math.log(num_patches / (num_patches - mask_patch))
    return int(1.6 * need) + 16


def _ids_from_dense(chosen: torch.Tensor, mask_patch: int) -> torch.Tensor:
    """``BoolTensor (B, N)``, >= mask_patch Trues a row -> its mask_patch lowest ids ``(B, M)``.

    The (m+1)-th chosen id equals how many ids have fewer than m+1 chosen ids up to and
    including them: a histogram of the running count, accumulated. (Sort- and branch-free:
    faster on CPU than ``nonzero``.)
    """
    B, N = chosen.shape
    rank = chosen.cumsum(1)  # (B, N) chosen ids <= id
    ones = torch.ones(B, N, dtype=torch.long)  # (B, N)
    per_rank = torch.zeros(B, N + 1, dtype=torch.long).scatter_add_(1, rank, ones)  # (B, N+1)
    return per_rank.cumsum(1)[:, :mask_patch]  # (B, M)


def cluster_mask(
    batch: int,
    num_patches: int,
    mask_patch: int,
    t_dim: int,
    generator: torch.Generator | None = None,
    *,
    device: torch.device | str | None = None,
    cluster_sizes: Sequence[int] = (3, 4, 5),
    keep: str = "set_order",
    exclude_first: bool = True,
    wrap_rows: bool = True,
) -> torch.Tensor:
    """Cluster masks for ``batch`` clips: ``LongTensor (batch, mask_patch)``, rows sorted.

    Same distribution as :func:`cluster_mask_reference`, vectorised: every clip draws K
    cluster starts at once; ``first[b, s]`` is the first draw that starts at ``s``, and a c x c
    min-filter of it gives ``first_draw[b, id]``, the first draw whose cluster covers ``id``.
    A clip stops at its (mask_patch+1)-th smallest first_draw: the first draw after which it
    holds MORE than mask_patch ids. Clips that need more draws get another chunk.
    Randomness comes from ``generator`` (a CPU ``torch.Generator``; the global one if None);
    the result is moved to ``device``.

    Official quirks (defaults) and their corrections: ``keep="set_order"`` (``"random"``: a
    uniform subset of the collected ids), ``exclude_first=True`` (``False``: id 0 can be
    masked), ``wrap_rows=True`` (``False``: clusters stop at the row end).

    ``keep="set_order"`` keeps what the official Python set keeps. A clip whose largest
    collected id is below :func:`set_table_size` of its id count keeps its lowest ids, found
    with tensor operations (every clip at 400 of 512 and at the course's 25, 62, 100 of 128).
    Any other clip (small ``mask_patch``: 10 of 512, 16 of 64, 100 of 1212) replays its drawn
    starts into a Python set, one clip at a time: exact, but slower.
    """
    batch = _int_at_least("batch", batch, 1)
    num_patches, mask_patch, t_dim, sizes = _check_cluster_args(
        num_patches, mask_patch, t_dim, cluster_sizes, exclude_first
    )
    if keep not in KEEP_CHOICES:
        raise ValueError(f"keep must be one of {KEEP_CHOICES}, got {keep!r}")
    B, N, M = batch, num_patches, mask_patch
    never = torch.iinfo(torch.long).max

    # Work on the clips sorted by cluster size, largest first, so that the clips whose cluster
    # reaches shift s are the rows [:reach[s]]; the rows go back to draw order at the end.
    largest_first = sorted(sizes, reverse=True)
    pick, order = torch.randint(len(sizes), (B,), generator=generator).sort()  # (B,), (B,)
    per_size = torch.bincount(pick, minlength=len(sizes)).tolist()
    sized = list(zip(largest_first, per_size, strict=True))  # (cluster size, clips)
    reach = [sum(n for c, n in sized if c > s) for s in range(max(sizes))]  # clips with c > s

    K = _draws_per_chunk(N, M, t_dim, min(sizes))
    pad = (max(sizes) - 1) * (t_dim + 1)  # the largest shift, t_dim*i + j
    # first[b, pad + s]: first draw of clip b that starts at s; the pad reads as "never".
    first = torch.full((B, pad + N), never)  # (B, pad+N)
    chunks = []  # the drawn starts, (B, K) each, for clips that must replay them
    drawn = 0
    while True:
        starts = torch.randint(pad, pad + N, (B, K), generator=generator)  # (B, K) pad + s
        chunks.append(starts)
        draw = torch.arange(drawn, drawn + K).expand(B, K)  # (B, K)
        first.scatter_reduce_(1, starts, draw, "amin")
        drawn += K
        # cell (i, j) of a cluster starting at s is id = s + t_dim*i + j, so
        # first_draw[id] = min over i, j < c of first[id - t_dim*i - j]: a c x c min-filter.
        along_t = first.clone()  # (B, pad+N)
        for j in range(1, max(sizes)):
            n = reach[j]
            cand = first[:n, pad - j : pad - j + N]  # (n, N)
            if not wrap_rows:  # a cell j to the right of its start is in the row iff col >= j
                cand = cand.masked_fill(torch.arange(N) % t_dim < j, never)
            torch.minimum(along_t[:n, pad:], cand, out=along_t[:n, pad:])
        first_draw = along_t[:, pad:].clone()  # (B, N)
        for i in range(1, max(sizes)):
            n, shift = reach[i], pad - t_dim * i
            cand = along_t[:n, shift : shift + N]  # (n, N)
            torch.minimum(first_draw[:n], cand, out=first_draw[:n])
        if exclude_first:
            first_draw[:, 0] = never
        # distinct ids after each draw: a histogram of first_draw, accumulated
        new = torch.zeros(B, drawn + 1, dtype=torch.long).scatter_add_(
            1, first_draw.clamp(max=drawn), torch.ones(B, N, dtype=torch.long)
        )  # (B, drawn+1), last bin: not covered yet
        passed = new[:, :drawn].cumsum(1) > M  # (B, drawn)
        if bool(passed[:, -1].all()):
            break
    stop = drawn - passed.sum(1)  # (B,) first draw after which a clip holds MORE than M ids
    collected = first_draw <= stop[:, None]  # (B, N) ids held when the clip stops

    if keep == "set_order":
        mask_ids = _ids_from_dense(collected, M)  # (B, M) the M lowest collected ids
        count = collected.sum(1)  # (B,)
        largest = (collected * torch.arange(N)).amax(1)  # (B,)
        in_slot_order = largest >= _set_table_sizes(N)[count]  # (B,) set order is not id order
        if bool(in_slot_order.any()):
            rows = in_slot_order.nonzero()[:, 0]  # (R,)
            replayed = []
            for starts_b, stop_b, pick_b in zip(  # one clip at a time: only these clips
                (torch.cat(chunks, 1)[rows] - pad).tolist(), stop[rows].tolist(),
                pick[rows].tolist(), strict=True,
            ):
                ids: set[int] = set()
                for start in starts_b[: stop_b + 1]:
                    _add_cluster(ids, start, largest_first[pick_b], N, t_dim,
                                 exclude_first, wrap_rows)  # fmt: skip
                replayed.append(sorted(list(ids)[:M]))
            mask_ids[rows] = torch.tensor(replayed)  # (R, M)
    else:
        score = torch.rand(B, N, generator=generator).masked_fill(~collected, -1.0)  # (B, N)
        top = score.topk(M, dim=1, sorted=False).indices  # (B, M)
        chosen = torch.zeros(B, N, dtype=torch.bool).scatter_(1, top, True)  # (B, N)
        mask_ids = _ids_from_dense(chosen, M)  # (B, M)
    mask_ids = torch.empty_like(mask_ids).index_copy_(0, order, mask_ids)  # (B, M) draw order
    return mask_ids.to(device) if device is not None else mask_ids


def random_mask(
    batch: int,
    num_patches: int,
    mask_patch: int,
    generator: torch.Generator | None = None,
    *,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``mask_patch`` ids per clip, uniformly without replacement over all ``num_patches``.

    No quirk: id 0 can be masked and every id is equally likely. ``LongTensor (batch,
    mask_patch)``, rows sorted. The official frame masking and the fair comparison for
    cluster masking.
    """
    batch = _int_at_least("batch", batch, 1)
    num_patches = _int_at_least("num_patches", num_patches, 1)
    mask_patch = _int_at_least("mask_patch", mask_patch, 1)
    if mask_patch > num_patches:
        raise ValueError(
            f"mask_patch={mask_patch} must be <= num_patches={num_patches} "
            "(ids are drawn without replacement)"
        )
    score = torch.rand(batch, num_patches, generator=generator)  # (B, N)
    top = score.topk(mask_patch, dim=1, sorted=False).indices  # (B, M)
    chosen = torch.zeros(batch, num_patches, dtype=torch.bool).scatter_(1, top, True)  # (B, N)
    mask_ids = _ids_from_dense(chosen, mask_patch)  # (B, M)
    return mask_ids.to(device) if device is not None else mask_ids


def frame_mask(
    batch: int,
    num_patches: int,
    mask_patch: int,
    t_dim: int | None = None,
    generator: torch.Generator | None = None,
    *,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Frame masks: the official ``cluster=False`` masking, :func:`random_mask` per clip.

    ``t_dim`` is accepted (and checked to divide ``num_patches``) only so that frame_mask
    and cluster_mask take the same arguments; it does not change the draw.
    """
    num_patches = _int_at_least("num_patches", num_patches, 1)
    if t_dim is not None:
        _check_t_dim(num_patches, t_dim)
    return random_mask(batch, num_patches, mask_patch, generator, device=device)


def _check_mask_ids(mask_ids: torch.Tensor, num_patches: int) -> None:
    if not isinstance(mask_ids, torch.Tensor) or mask_ids.ndim != 2:
        raise ValueError("mask_ids must be a LongTensor (B, M) of patch ids")
    if mask_ids.dtype != torch.long:
        raise ValueError(f"mask_ids must be a LongTensor (B, M), got dtype {mask_ids.dtype}")
    if mask_ids.numel() and (mask_ids.min() < 0 or mask_ids.max() >= num_patches):
        raise ValueError(f"mask_ids must lie in [0, {num_patches}) for num_patches={num_patches}")


def mask_to_dense(mask_ids: torch.Tensor, num_patches: int) -> torch.Tensor:
    """Ids ``(B, M)`` -> ``BoolTensor (B, N)``, True where a patch is masked."""
    num_patches = _int_at_least("num_patches", num_patches, 1)
    _check_mask_ids(mask_ids, num_patches)
    dense = torch.zeros(mask_ids.shape[0], num_patches, dtype=torch.bool, device=mask_ids.device)
    return dense.scatter_(1, mask_ids, True)  # (B, N)


def mask_to_grid(mask_ids: torch.Tensor, f_dim: int, t_dim: int) -> torch.Tensor:
    """Ids ``(B, M)`` -> ``BoolTensor (B, f_dim, t_dim)``, the patch grid, for plotting."""
    f_dim = _int_at_least("f_dim", f_dim, 1)
    t_dim = _int_at_least("t_dim", t_dim, 1)
    return mask_to_dense(mask_ids, f_dim * t_dim).view(-1, f_dim, t_dim)  # (B, F, T)


def masking_frequency(mask_ids: torch.Tensor, f_dim: int, t_dim: int) -> torch.Tensor:
    """Fraction of clips in which each grid cell is masked: ``FloatTensor (f_dim, t_dim)``."""
    return mask_to_grid(mask_ids, f_dim, t_dim).float().mean(0)  # (F, T)
