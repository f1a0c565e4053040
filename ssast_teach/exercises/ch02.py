"""Checkers for chapter 02 (patches and frames): grid size, unfold, fold.

Each checker runs the student's function on seeded cases and compares it with
:mod:`ssast_teach.patches`; ``hidden=True`` runs further cases (the graded hidden tests).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ssast_teach.exercises import ExerciseError, call_student, check_tensor, checker, passed
from ssast_teach.patches import PatchGrid, fold_patches, unfold_patches

# (input_fdim, input_tdim, fshape, tshape, fstride, tstride)
Geometry = tuple[int, int, int, int, int, int]

GRID_CASES: list[Geometry] = [
    (128, 1024, 16, 16, 16, 16),  # patch model, pretraining
    (128, 1024, 128, 2, 128, 2),  # frame model, pretraining
    (128, 1024, 16, 16, 10, 10),  # patch model, fine-tuning stride 10
    (128, 1024, 128, 2, 128, 1),  # frame model, fine-tuning tstride 1
    (128, 512, 16, 16, 10, 10),  # ESC-50 input
    (128, 100, 16, 16, 16, 16),  # a tail shorter than a patch is dropped
]
GRID_HIDDEN: list[Geometry] = [
    (128, 128, 16, 16, 10, 10),  # Speech Commands input
    (128, 998, 16, 16, 16, 16),
    (64, 300, 8, 4, 6, 3),
    (128, 1024, 128, 2, 128, 2),
    (40, 7, 40, 1, 1, 1),
    (17, 33, 5, 7, 3, 2),
]

# Small grids for unfold/fold: (input_fdim, input_tdim, fshape, tshape, fstride, tstride)
PATCH_CASES: list[Geometry] = [
    (32, 48, 16, 16, 16, 16),  # non-overlapping, 2 x 3 patches
    (32, 20, 32, 2, 32, 2),  # frame-like: each patch spans every bin
    (32, 48, 16, 16, 10, 10),  # overlapping, as at fine-tuning
    (12, 10, 4, 3, 4, 3),  # non-square patches
]
PATCH_HIDDEN: list[Geometry] = [
    (36, 50, 16, 16, 16, 16),  # tails shorter than a patch in both directions
    (32, 21, 32, 2, 32, 1),  # frame model at tstride 1
    (20, 30, 6, 5, 4, 2),
    (8, 8, 8, 8, 8, 8),  # a single patch
]


def _case_name(g: PatchGrid, batch: int) -> str:
    return (
        f"input {batch}x1x{g.input_fdim}x{g.input_tdim}, patch {g.fshape}x{g.tshape}, "
        f"stride {g.fstride}x{g.tstride}"
    )


def _image(g: PatchGrid, seed: int, batch: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1, g.input_fdim, g.input_tdim, generator=gen)  # (B, 1, F, T)


@checker()
def check_grid_size(fn: Callable[..., Any], hidden: bool = False) -> None:
    """``fn(input_fdim, input_tdim, fshape, tshape, fstride, tstride) -> (f_dim, t_dim)``."""
    cases = GRID_HIDDEN if hidden else GRID_CASES
    for case in cases:
        grid = PatchGrid(*case)
        name = f"input {case[0]}x{case[1]}, patch {case[2]}x{case[3]}, stride {case[4]}x{case[5]}"
        got = call_student(fn, *case, case=name)
        if (
            not isinstance(got, (tuple, list))
            or len(got) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in got)
        ):
            raise ExerciseError(
                f"grid_size should return a pair of ints (f_dim, t_dim), got {got!r} on {name}"
            )
        expected = (grid.f_dim, grid.t_dim)
        if tuple(got) == expected:
            continue
        hint = ""
        if tuple(got) == (expected[1], expected[0]):
            hint = " (you returned (t_dim, f_dim): frequency comes first)"
        elif any(g == e - 1 for g, e in zip(got, expected, strict=True)):
            hint = " (remember the +1: the first window starts at 0)"
        elif any(g > e for g, e in zip(got, expected, strict=True)):
            hint = " (a window must fit completely: round down, do not pad)"
        raise ExerciseError(
            f"grid_size gives {tuple(got)} on {name}, expected {expected}: each side is "
            f"(input - shape) // stride + 1{hint}"
        )
    what = "hidden geometries" if hidden else "pretraining and fine-tuning geometries"
    passed(2, 1, f"grid_size matches PatchGrid on {len(cases)} {what}")


def _unfold_hint(got: torch.Tensor, expected: torch.Tensor, g: PatchGrid) -> str:
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
    return ""


@checker()
def check_unfold(fn: Callable[..., Any], hidden: bool = False) -> None:
    """``fn(x (B, 1, F, T), grid) -> (B, N, fshape*tshape)``, as ``unfold_patches``."""
    cases = PATCH_HIDDEN if hidden else PATCH_CASES
    for k, case in enumerate(cases):
        grid = PatchGrid(*case)
        x = _image(grid, seed=100 * hidden + k)  # (B, 1, F, T)
        name = _case_name(grid, x.shape[0])
        got = call_student(fn, x.clone(), grid, case=name)
        expected = unfold_patches(x, grid)  # (B, N, P)
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
            swapped = expected.transpose(1, 2).shape  # (B, P, N)
            if isinstance(got, torch.Tensor) and got.shape == swapped:
                raise ExerciseError(
                    f"unfold(x, grid) on {name} has shape {tuple(got.shape)} = (B, P, N); "
                    f"tokens come first: (B, N, P) = {tuple(expected.shape)}"
                )
            check_tensor("unfold(x, grid)", got, expected, case=name)  # names the problem
        try:
            check_tensor("unfold(x, grid)", got, expected, case=name, atol=0, rtol=0)
        except ExerciseError as error:
            raise ExerciseError(f"{error}{_unfold_hint(got, expected, grid)}") from None
    what = "hidden geometries" if hidden else "overlapping, non-overlapping and frame geometries"
    passed(2, 2, f"unfold matches ssast_teach.patches.unfold_patches on {len(cases)} {what}")


@checker()
def check_fold(fn: Callable[..., Any], hidden: bool = False) -> None:
    """``fn(patches (B, N, fshape*tshape), grid) -> (B, 1, F, T)``, as ``fold_patches``."""
    cases = PATCH_HIDDEN if hidden else PATCH_CASES
    for k, case in enumerate(cases):
        grid = PatchGrid(*case)
        x = _image(grid, seed=200 + 100 * hidden + k)  # (B, 1, F, T)
        patches = unfold_patches(x, grid)  # (B, N, P)
        name = _case_name(grid, x.shape[0])
        got = call_student(fn, patches.clone(), grid, case=name)
        expected = fold_patches(patches, grid)  # (B, 1, F, T)
        try:
            check_tensor("fold(patches, grid)", got, expected, case=name, atol=1e-5, rtol=1e-5)
        except ExerciseError as error:
            hint = ""
            comparable = isinstance(got, torch.Tensor) and got.dtype == expected.dtype
            if comparable and got.shape == expected.shape:
                summed = torch.nn.functional.fold(
                    patches.transpose(1, 2),
                    output_size=(grid.input_fdim, grid.input_tdim),
                    kernel_size=(grid.fshape, grid.tshape),
                    stride=(grid.fstride, grid.tstride),
                )  # (B, 1, F, T)
                if grid.overlapping and torch.allclose(got, summed, atol=1e-5):
                    hint = (
                        "; where patches overlap you summed them: divide by how many patches "
                        "cover each pixel (fold a tensor of ones to count)"
                    )
            raise ExerciseError(f"{error}{hint}") from None
    what = "hidden geometries" if hidden else "overlapping, non-overlapping and frame geometries"
    passed(2, 3, f"fold matches ssast_teach.patches.fold_patches on {len(cases)} {what}")
