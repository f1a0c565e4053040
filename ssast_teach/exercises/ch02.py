"""Checkers for chapter 02 (patches and frames): unfold and fold by reshapes, and the extension,
a fold for overlapping patches checked by its properties.

Each checker runs the student's function on seeded cases and compares it with
:mod:`ssast_teach.patches` (the extension: with the properties any right answer has);
``hidden=True`` runs further cases drawn from :func:`hidden_seed` (the graded hidden tests).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ssast_teach.exercises import (
    ExerciseError,
    call_student,
    check_tensor,
    checker,
    hidden_seed,
    passed,
)
from ssast_teach.patches import PatchGrid, fold_patches, unfold_patches

__all__ = ["check_fold", "check_fold_by_reshape", "check_unfold_by_reshape"]

# Non-overlapping geometries: (input_fdim, input_tdim, fshape, tshape)
TILE_CASES = [
    (32, 48, 16, 16),  # 2 x 3 patches
    (32, 20, 32, 2),  # frame-like: each patch spans every bin
    (12, 10, 4, 5),  # non-square patches
    (36, 50, 16, 16),  # tails shorter than a patch in both directions: dropped
]
TILE_FIXED_HIDDEN = [(8, 8, 8, 8), (128, 64, 128, 2)]  # a single patch; official frames


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _tile_cases(hidden: bool) -> list[tuple[int, int, int, int]]:
    if not hidden:
        return TILE_CASES
    g = _gen(hidden_seed(21))
    cases = list(TILE_FIXED_HIDDEN)
    for _ in range(4):
        fshape, tshape, f_dim, t_dim, f_tail, t_tail = (
            int(v) for v in torch.randint(1, 7, (6,), generator=g)
        )
        cases.append((fshape * f_dim + f_tail % fshape, tshape * t_dim + t_tail % tshape,
                      fshape, tshape))  # fmt: skip
    return cases


def _image(fdim: int, tdim: int, seed: int, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 1, fdim, tdim, generator=_gen(seed))  # (B, 1, F, T)


def _tile_grid(fdim: int, tdim: int, fshape: int, tshape: int) -> PatchGrid:
    return PatchGrid(fdim, tdim, fshape, tshape, fshape, tshape)


# ---------------------------------------------------------------------------------------------
# Exercise 1: unfold by reshapes


def _unfold_by_reshape(x: torch.Tensor, fshape: int, tshape: int) -> torch.Tensor:
    grid = _tile_grid(x.shape[2], x.shape[3], fshape, tshape)
    return unfold_patches(x, grid)  # (B, N, P)


def _unfold_hint(got: torch.Tensor, x: torch.Tensor, expected: torch.Tensor,
                 g: PatchGrid) -> str:  # fmt: skip
    """Name a common mistake when ``got`` has the right shape but the wrong values."""
    if got.dtype != expected.dtype:
        return ""
    b = expected.shape[0]
    time_major = expected.view(b, g.f_dim, g.t_dim, -1).transpose(1, 2)  # (B, t_dim, f_dim, P)
    if torch.equal(got, time_major.reshape_as(expected)):
        return "; your patches are in time-major order: number them f_row * t_dim + t_col"
    inner = expected.view(b, -1, g.fshape, g.tshape).transpose(2, 3)  # (B, N, tshape, fshape)
    if torch.equal(got, inner.reshape_as(expected)):
        return (
            "; the values inside each patch are time-major: flatten each (fshape, tshape) "
            "window row by row (frequency first)"
        )
    cropped = x[:, 0, : g.f_dim * g.fshape, : g.t_dim * g.tshape]  # (B, F', T')
    if torch.equal(got, cropped.reshape_as(expected)):
        return (
            "; you reshaped without moving the axes: after splitting F into (f_dim, fshape) and "
            "T into (t_dim, tshape), permute so that (f_dim, t_dim) come before (fshape, tshape)"
        )
    return ""


@checker(reference=_unfold_by_reshape)
def check_unfold_by_reshape(fn: Callable[..., Any], hidden: bool = False) -> None:
    """``fn(x (B, 1, F, T), fshape, tshape) -> (B, N, fshape*tshape)``, non-overlapping."""
    cases = _tile_cases(hidden)
    for k, (fdim, tdim, fshape, tshape) in enumerate(cases):
        grid = _tile_grid(fdim, tdim, fshape, tshape)
        x = _image(fdim, tdim, seed=100 * hidden + k)  # (B, 1, F, T)
        tails = " (tails shorter than a patch)" if (fdim % fshape or tdim % tshape) else ""
        name = f"input {tuple(x.shape)}, patch {fshape}x{tshape}{tails}"
        got = call_student(fn, x.clone(), fshape, tshape, case=name)
        expected = unfold_patches(x, grid)  # (B, N, P)
        if isinstance(got, torch.Tensor) and got.shape == expected.transpose(1, 2).shape:
            if got.shape != expected.shape:
                raise ExerciseError(
                    f"unfold_by_reshape on {name} has shape {tuple(got.shape)} = (B, P, N); "
                    f"tokens come first: (B, N, P) = {tuple(expected.shape)}"
                )
        try:
            check_tensor("unfold_by_reshape(x, ...)", got, expected, case=name, atol=0, rtol=0)
        except ExerciseError as error:
            hint = _unfold_hint(got, x, expected, grid) if isinstance(got, torch.Tensor) else ""
            if isinstance(got, torch.Tensor) and got.shape == expected.shape:
                raise ExerciseError(f"{error}{hint}") from None
            raise
    what = "hidden geometries" if hidden else "geometries: patches, frames, non-square, tails"
    passed(2, 1, f"unfold_by_reshape matches ssast_teach.patches.unfold_patches on "
                 f"{len(cases)} {what}")  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Exercise 2: fold by reshapes


def _fold_by_reshape(patches: torch.Tensor, f_dim: int, t_dim: int, fshape: int,
                     tshape: int) -> torch.Tensor:  # fmt: skip
    grid = _tile_grid(f_dim * fshape, t_dim * tshape, fshape, tshape)
    return fold_patches(patches, grid)  # (B, 1, F, T)


@checker(reference=_fold_by_reshape)
def check_fold_by_reshape(fn: Callable[..., Any], hidden: bool = False) -> None:
    """``fn(patches (B, N, P), f_dim, t_dim, fshape, tshape) -> (B, 1, f_dim*fshape, t_dim*tshape)``."""
    cases = [(f - f % fs, t - t % ts, fs, ts) for f, t, fs, ts in _tile_cases(hidden)]
    for k, (fdim, tdim, fshape, tshape) in enumerate(cases):
        grid = _tile_grid(fdim, tdim, fshape, tshape)
        x = _image(fdim, tdim, seed=300 + 100 * hidden + k)  # (B, 1, F, T)
        patches = unfold_patches(x, grid)  # (B, N, P)
        args = (grid.f_dim, grid.t_dim, fshape, tshape)
        name = (f"patches {tuple(patches.shape)}, f_dim={grid.f_dim}, t_dim={grid.t_dim}, "
                f"patch {fshape}x{tshape}")  # fmt: skip
        got = call_student(fn, patches.clone(), *args, case=name)
        if isinstance(got, torch.Tensor) and got.shape == x.shape[:1] + x.shape[2:]:
            raise ExerciseError(
                f"fold_by_reshape on {name} has shape {tuple(got.shape)}; keep the channel "
                f"axis: (B, 1, F, T) = {tuple(x.shape)}"
            )
        if (
            isinstance(got, torch.Tensor)
            and got.shape == x.shape
            and not torch.equal(got, x)
            and torch.equal(got, patches.reshape(x.shape))
        ):
            raise ExerciseError(
                f"fold_by_reshape on {name}: you reshaped without moving the axes back; view "
                "the patches as (B, f_dim, t_dim, fshape, tshape) and permute to (B, f_dim, "
                "fshape, t_dim, tshape) before the last reshape"
            )
        check_tensor("fold_by_reshape(patches, ...)", got, x, case=name, atol=0, rtol=0)
    what = "hidden geometries" if hidden else "geometries: patches, frames, non-square"
    passed(2, 2, f"fold_by_reshape inverts unfold exactly on {len(cases)} {what}")


# ---------------------------------------------------------------------------------------------
# Exercise 3 (extension): fold with overlapping patches, checked by its properties

# (input_fdim, input_tdim, fshape, tshape, fstride, tstride)
OVERLAP_CASES = [
    (32, 48, 16, 16, 10, 10),  # the fine-tuning stride: overlaps and uncovered tails
    (32, 21, 32, 2, 32, 1),  # frames at tstride 1: every inner frame in two patches
    (12, 10, 4, 3, 4, 3),  # no overlap at all
    (8, 8, 8, 8, 8, 8),  # a single patch
]


def _overlap_cases(hidden: bool) -> list[tuple[int, ...]]:
    if not hidden:
        return OVERLAP_CASES
    g = _gen(hidden_seed(23))
    cases = []
    while len(cases) < 4:
        fshape, tshape = (int(v) for v in torch.randint(2, 9, (2,), generator=g))
        fstride = int(torch.randint(1, fshape + 1, (1,), generator=g))
        tstride = int(torch.randint(1, tshape + 1, (1,), generator=g))
        fdim = fshape + int(torch.randint(0, 3 * fshape, (1,), generator=g))
        tdim = tshape + int(torch.randint(0, 3 * tshape, (1,), generator=g))
        cases.append((fdim, tdim, fshape, tshape, fstride, tstride))
    return cases


def _run_fold(fn: Callable[..., Any], patches: torch.Tensor, grid: PatchGrid, x: torch.Tensor,
              case: str) -> torch.Tensor:  # fmt: skip
    """The student's fold of ``patches``, checked to leave them alone and to have x's shape."""
    before = patches.clone()
    got = call_student(fn, patches, grid, case=case)
    if not torch.equal(patches, before):
        raise ExerciseError(f"fold changed its input patches ({case})")
    if not isinstance(got, torch.Tensor) or got.shape != x.shape or got.dtype != x.dtype:
        check_tensor("fold(patches, grid)", got, x, case=case)  # names the problem
    return got


@checker()
def check_fold(fn: Callable[..., Any], hidden: bool = False) -> None:
    """``fn(patches (B, N, P), grid) -> (B, 1, F, T)`` for any stride: by properties. Folding
    the patches of an image gives the image back where patches cover it and 0 elsewhere;
    folding any patches is linear; where patches disagree a pixel is their mean, so weighting
    each pixel by how many patches cover it gives back the total of the patch values."""
    cases = _overlap_cases(hidden)
    for k, case in enumerate(cases):
        grid = PatchGrid(*case)
        g = _gen((hidden_seed(500) if hidden else 500) + k)
        name = (f"input 2x1x{grid.input_fdim}x{grid.input_tdim}, patch {grid.fshape}x"
                f"{grid.tshape}, stride {grid.fstride}x{grid.tstride}")  # fmt: skip
        count = F.fold(torch.ones(1, grid.patch_dim, grid.num_patches),
                       (grid.input_fdim, grid.input_tdim), kernel_size=(grid.fshape, grid.tshape),
                       stride=(grid.fstride, grid.tstride))  # (1, 1, F, T) patches per pixel
        covered = count > 0
        x = torch.randn(2, 1, grid.input_fdim, grid.input_tdim, generator=g)  # (B, 1, F, T)
        consistent = unfold_patches(x, grid)  # (B, N, P): overlapping patches agree
        p = torch.randn(consistent.shape, generator=g)  # (B, N, P): patches that disagree
        q = torch.randn(consistent.shape, generator=g)

        back = _run_fold(fn, consistent, grid, x, f"the patches of an image on {name}")
        if not torch.allclose(back, x * covered, atol=1e-5):
            summed = F.fold(consistent.transpose(1, 2), (grid.input_fdim, grid.input_tdim),
                            kernel_size=(grid.fshape, grid.tshape),
                            stride=(grid.fstride, grid.tstride))  # fmt: skip
            hint = ""
            if grid.overlapping and torch.allclose(back, summed, atol=1e-5):
                hint = ("; where patches overlap you summed them: divide by how many patches "
                        "cover each pixel (fold a tensor of ones to count)")  # fmt: skip
            elif not torch.allclose(back[~covered.expand_as(back)], torch.zeros(())):
                hint = "; a pixel that no patch covers must be 0"
            raise ExerciseError(
                f"fold(unfold(x)) is not x on the covered pixels of {name} (max |difference| "
                f"{(back - x * covered).abs().max():.3g}){hint}"
            )
        fp = _run_fold(fn, p, grid, x, f"random patches on {name}")
        fq = _run_fold(fn, q, grid, x, f"random patches on {name}")
        f_mix = _run_fold(fn, 2 * p + q, grid, x, f"2 * p + q on {name}")
        if not torch.allclose(f_mix, 2 * fp + fq, atol=1e-4):
            raise ExerciseError(f"fold is not linear on {name}: fold(2p + q) != 2 fold(p) + fold(q)")
        if bool((fp.masked_select(~covered.expand_as(fp)) != 0).any()):
            raise ExerciseError(f"fold of random patches on {name} is not 0 where no patch covers")
        total, weighted = p.sum((1, 2)), (fp * count).sum((1, 2, 3))  # (B,), (B,)
        if not torch.allclose(weighted, total, rtol=1e-4, atol=1e-3):
            raise ExerciseError(
                f"on {name} with patches that disagree where they overlap, a pixel must be the "
                "MEAN of the patches covering it (then pixel * count summed over the image is "
                f"the sum of all patch values, {total[0]:.4f}; yours gives {weighted[0]:.4f}): "
                "did one patch overwrite the others?"
            )
    what = "hidden geometries" if hidden else "geometries: stride 10, frames at tstride 1, tiles, one patch"
    passed(2, 3, f"fold inverts unfold on covered pixels, is linear and averages overlaps "
                 f"({len(cases)} {what})")  # fmt: skip
