"""Checkers for chapter 06 (pretraining): the warm-up lr, the joint loss of a step, fill-and-fold.

The references are :func:`ssast_teach.training.warmup_lr`,
:class:`ssast_teach.pretrain.PretrainObjective` and :func:`ssast_teach.patches.fold_patches`.
Wrong answers that equal a known mistake (one mask for both objectives, a weight of 1, the
``step + 1`` warm-up, ...) are named in the message.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ssast_teach import training
from ssast_teach.exercises import ExerciseError, call_student, check_with_hints, checker, passed
from ssast_teach.masking import cluster_mask, frame_mask
from ssast_teach.model import SSASTModel
from ssast_teach.patches import PatchGrid, fold_patches
from ssast_teach.pretrain import PretrainConfig, PretrainObjective

# ---------------------------------------------------------------------------- exercise 1


def _warmup_hint(got: object, step: int, base_lr: float, warmup_steps: int, every: int) -> str:
    expected = training.warmup_lr(step, base_lr, warmup_steps, every)
    if expected is None:
        if step > warmup_steps:
            return (f"after warm-up (step {step} > warmup_steps={warmup_steps}) the official loop "
                    "no longer touches the lr: return None")
        return (f"step {step} is not a multiple of every={every}: the official loop leaves the lr "
                "alone between its updates: return None")
    if got is None:
        return (f"at step {step} (a multiple of every={every}, <= warmup_steps) the official loop "
                f"sets lr = step / warmup_steps * base_lr = {expected:.6g}")
    if isinstance(got, (int, float)) and math.isclose(got, (step + 1) / warmup_steps * base_lr):
        return "this is (step + 1) / warmup_steps * base_lr; the official formula uses step itself"
    return f"expected step / warmup_steps * base_lr = {expected:.6g}"


@checker()
def check_warmup_lr(
    warmup_lr: Callable[[int, float, int, int], float | None], hidden: bool = False
) -> None:
    """``warmup_lr(step, base_lr, warmup_steps, every)``: the official warm-up lr or None."""
    settings = [(1e-4, 1000, 50), (5e-4, 100, 10)]  # (base_lr, warmup_steps, every)
    if hidden:
        settings += [(1e-3, 7, 3), (2.5e-4, 30, 1), (0.1, 5, 5)]
    for base_lr, warmup_steps, every in settings:
        for step in range(warmup_steps + 3 * every + 1):
            case = f"step={step}, base_lr={base_lr:g}, warmup_steps={warmup_steps}, every={every}"
            got = call_student(warmup_lr, step, base_lr, warmup_steps, every, case=case)
            expected = training.warmup_lr(step, base_lr, warmup_steps, every)
            if expected is None and got is None:
                continue
            ok = (
                expected is not None
                and isinstance(got, (int, float, Tensor))
                and math.isclose(float(got), expected, rel_tol=1e-9, abs_tol=1e-15)
            )
            if not ok:
                raise ExerciseError(
                    f"warmup_lr({case}) returned {got!r}, expected {expected!r}: "
                    f"{_warmup_hint(got, step, base_lr, warmup_steps, every)}"
                )
    passed(6, 1, "your warm-up sets the official lr staircase (and leaves the lr alone elsewhere)")


# ---------------------------------------------------------------------------- exercise 2


def _joint_cases(hidden: bool) -> list[tuple[str, SSASTModel, Tensor, Tensor, Tensor]]:
    """Seeded ``(case, model, x, mask_a, mask_b)``: tiny mini models, patch and frame."""
    specs = [(601, 16, 16, 48, 2, 10)]  # (seed, fshape, tshape, input_tdim, B, M)
    if hidden:
        specs += [(602, 128, 2, 32, 3, 12), (603, 16, 16, 64, 1, 24)]
    cases = []
    for seed, fshape, tshape, tdim, b, m in specs:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = SSASTModel.for_pretraining("mini", fshape, tshape, 128, tdim)
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(b, tdim, 128, generator=g) * 0.5  # (B, T, F)
        draw = frame_mask if fshape == 128 else cluster_mask
        grid = model.grid
        mask_a = draw(b, grid.num_patches, m, grid.t_dim, generator=g)  # (B, M)
        mask_b = draw(b, grid.num_patches, m, grid.t_dim, generator=g)  # (B, M)
        case = (f"seeded case {seed}: mini {fshape}x{tshape} model, x {(b, tdim, 128)}, "
                f"masks {(b, m)}")
        cases.append((case, model, x, mask_a, mask_b))
    return cases


@checker()
def check_joint_step_loss(
    joint_step_loss: Callable[[SSASTModel, Tensor, Tensor, Tensor], Tensor], hidden: bool = False
) -> None:
    """``joint_step_loss(model, x, mask_a, mask_b)``: ``nce(mask_a) + 10 * mse(mask_b)``."""
    for case, model, x, mask_a, mask_b in _joint_cases(hidden):
        fshape, tshape = model.config.fshape, model.config.tshape
        config = PretrainConfig(size="mini", fshape=fshape, tshape=tshape,
                                input_tdim=model.config.input_tdim, mask_patch=mask_a.shape[1],
                                eval_mask_patch=None)
        got = call_student(joint_step_loss, model, x.clone(), mask_a.clone(), mask_b.clone(),
                           case=case)
        with torch.no_grad():
            expected = PretrainObjective(model, config)(x, mask_a, mask_b)["loss"]
            nce_a, nce_b = model.mpc(x, mask_a)[1], model.mpc(x, mask_b)[1]
            mse_a, mse_b = model.mpg(x, mask_a), model.mpg(x, mask_b)
        mistakes = [
            ("one mask for both objectives (mask_a twice); the official step draws a second "
             "mask for mpg: nce(mask_a) + 10 * mse(mask_b)", nce_a + 10 * mse_a),
            ("one mask for both objectives (mask_b twice)", nce_b + 10 * mse_b),
            ("the masks are swapped: mpc takes mask_a, mpg takes mask_b", nce_b + 10 * mse_a),
            ("a weight of 1 on the mse; the official loss is nce + 10 * mse", nce_a + mse_b),
            ("the weight 10 is on nce instead of mse", 10 * nce_a + mse_b),
            ("only the nce term", nce_a),
            ("only the mse term", mse_b),
        ]
        check_with_hints("joint_step_loss(model, x, mask_a, mask_b)", got, expected, mistakes,
                         case=case, atol=1e-4, rtol=1e-5)
        if not got.requires_grad:
            raise ExerciseError(
                f"joint_step_loss on {case} returned a tensor without a graph (requires_grad is "
                "False): backward could not train the model; no torch.no_grad(), .item() or "
                ".detach() in the loss"
            )
    passed(6, 2, "your joint loss is the official two-mask nce + 10 * mse")


# ---------------------------------------------------------------------------- exercise 3


def _fold_cases(hidden: bool) -> list[tuple[str, Tensor, Tensor, Tensor, PatchGrid]]:
    grids = [(611, PatchGrid(32, 48, 16, 16, 16, 16), 2, 3),  # (seed, grid, B, M)
             (612, PatchGrid(128, 8, 128, 2, 128, 2), 3, 2)]
    if hidden:
        grids += [(613, PatchGrid(32, 40, 16, 16, 8, 8), 2, 5),  # overlapping: averaged
                  (614, PatchGrid(128, 256, 16, 16, 16, 16), 1, 100)]
    cases = []
    for seed, grid, b, m in grids:
        g = torch.Generator().manual_seed(seed)
        patches = torch.randn(b, grid.num_patches, grid.patch_dim, generator=g)  # (B, N, P)
        mask_ids = torch.rand(b, grid.num_patches, generator=g).argsort(1)[:, :m].sort(1).values
        pred = torch.randn(b, m, grid.patch_dim, generator=g)  # (B, M, P)
        case = (f"seeded case {seed}: {grid.f_dim}x{grid.t_dim} grid of {grid.fshape}x"
                f"{grid.tshape} patches (stride {grid.fstride}x{grid.tstride}), B={b}, M={m}")
        cases.append((case, pred, patches, mask_ids, grid))
    return cases


@checker()
def check_fill_and_fold(
    fill_and_fold: Callable[[Tensor, Tensor, Tensor, PatchGrid], Tensor], hidden: bool = False
) -> None:
    """``fill_and_fold(pred, patches, mask_ids, grid)``: the filled-in spectrogram image."""
    for case, pred, patches, mask_ids, grid in _fold_cases(hidden):
        got = call_student(fill_and_fold, pred.clone(), patches.clone(), mask_ids.clone(), grid,
                           case=case)
        p = patches.shape[-1]
        ids = mask_ids.unsqueeze(-1).expand(-1, -1, p)  # (B, M, P)
        expected = fold_patches(patches.scatter(1, ids, pred), grid)
        m = mask_ids.shape[1]
        first = torch.arange(m).expand_as(mask_ids).unsqueeze(-1).expand(-1, -1, p)
        mistakes = [
            ("the masked patches still hold the original values: put pred at mask_ids "
             "(patches.scatter(1, ids, pred)) before folding", fold_patches(patches, grid)),
            ("pred went to the first M patches instead of each clip's mask_ids",
             fold_patches(patches.scatter(1, first, pred), grid)),
            ("every clip used the first clip's mask_ids",
             fold_patches(patches.scatter(1, ids[:1].expand_as(ids), pred), grid)),
        ]
        check_with_hints("fill_and_fold(pred, patches, mask_ids, grid)", got, expected, mistakes,
                         case=case)
    passed(6, 3, "your filled-in spectrogram matches (visible patches kept, masked ones predicted)")
