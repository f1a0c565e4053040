"""Checkers for chapter 06 (pretraining): the warm-up lr, the joint loss of a step, fill-and-fold,
and (an extension checked by its properties) packing short clips into inputs.

The references are :func:`ssast_teach.training.warmup_lr`,
:class:`ssast_teach.pretrain.PretrainObjective` and :func:`ssast_teach.patches.fold_patches`.
Wrong answers that equal a known mistake (one mask for both objectives, a weight of 1, the
``step + 1`` warm-up, ...) are named in the message. Packing has many right answers, so its
checker asks for the properties every one of them has: each clip whole in exactly one input,
long clips alone, every input filled, and no clip wasted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ssast_teach import training
from ssast_teach.exercises import (
    ExerciseError,
    call_student,
    check_with_hints,
    checker,
    hidden_seed,
    passed,
)
from ssast_teach.masking import cluster_mask, frame_mask
from ssast_teach.model import SSASTModel
from ssast_teach.patches import PatchGrid, fold_patches
from ssast_teach.pretrain import PretrainConfig, PretrainObjective

__all__ = ["check_fill_and_fold", "check_joint_step_loss", "check_pack_clips", "check_warmup_lr"]

# ---------------------------------------------------------------------------- exercise 1


def _warmup_lr(step: int, base_lr: float, warmup_steps: int = 1000, every: int = 50):
    """The library's official warm-up, with the exercise's signature."""
    return training.warmup_lr(step, base_lr, warmup_steps, every)


def _warmup_settings(hidden: bool) -> list[tuple[float, int, int]]:
    """``(base_lr, warmup_steps, every)``: the official and classroom settings, plus (hidden)
    a step-every-time warm-up, one where ``every`` does not divide ``warmup_steps``, and
    seeded random ones."""
    settings = [(1e-4, 1000, 50), (5e-4, 100, 10)]
    if hidden:
        g = torch.Generator().manual_seed(hidden_seed(606))
        settings += [(2.5e-4, 30, 1), (1e-3, 7, 3)]
        for _ in range(3):
            warmup_steps = int(torch.randint(5, 80, (), generator=g))
            every = int(torch.randint(1, 13, (), generator=g))
            base_lr = float(10 ** (-5 + 3 * torch.rand((), generator=g)))
            settings.append((base_lr, warmup_steps, every))
    return settings


def _warmup_hint(got: object, step: int, base_lr: float, warmup_steps: int, every: int) -> str:
    expected = _warmup_lr(step, base_lr, warmup_steps, every)
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


@checker(reference=_warmup_lr)
def check_warmup_lr(
    warmup_lr: Callable[[int, float, int, int], float | None], hidden: bool = False
) -> None:
    """``warmup_lr(step, base_lr, warmup_steps, every)``: the official warm-up lr or None."""
    settings = _warmup_settings(hidden)
    for base_lr, warmup_steps, every in settings:
        for step in range(warmup_steps + 3 * every + 1):
            case = f"step={step}, base_lr={base_lr:g}, warmup_steps={warmup_steps}, every={every}"
            got = call_student(warmup_lr, step, base_lr, warmup_steps, every, case=case)
            expected = _warmup_lr(step, base_lr, warmup_steps, every)
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
    which = f"{len(settings)} hidden settings" if hidden else "the official and classroom settings"
    passed(6, 1, f"your warm-up sets the official lr staircase on {which} "
                 "(and leaves the lr alone elsewhere)")


# ---------------------------------------------------------------------------- exercise 2


def _joint_step_loss(model: SSASTModel, x: Tensor, mask_a: Tensor, mask_b: Tensor) -> Tensor:
    """The library's joint loss (``PretrainObjective``), with the exercise's signature."""
    config = PretrainConfig(size=model.config.size, fshape=model.config.fshape,
                            tshape=model.config.tshape, input_tdim=model.config.input_tdim,
                            mask_patch=mask_a.shape[1], eval_mask_patch=None)
    return PretrainObjective(model, config)(x, mask_a, mask_b)["loss"]


def _joint_specs(hidden: bool) -> list[tuple[int, int, int, int, int, int]]:
    """``(seed, fshape, tshape, input_tdim, B, M)``: a patch case; hidden, a frame case and
    seeded random geometries of both kinds."""
    specs = [(601, 16, 16, 48, 2, 10)]
    if hidden:
        seed = hidden_seed(602)
        g = torch.Generator().manual_seed(seed)
        specs.append((seed, 128, 2, 32, 3, 12))
        for k in range(2):
            fshape, tshape = ((16, 16), (128, 2))[k]
            tdim = int(torch.randint(2, 5, (), generator=g)) * 16  # 32, 48 or 64 frames
            n = (128 // fshape) * (tdim // tshape)
            m = int(torch.randint(4, n // 2 + 1, (), generator=g))
            b = int(torch.randint(1, 4, (), generator=g))
            specs.append((seed + 1 + k, fshape, tshape, tdim, b, m))
    return specs


def _joint_cases(hidden: bool) -> list[tuple[str, SSASTModel, Tensor, Tensor, Tensor]]:
    """Seeded ``(case, model, x, mask_a, mask_b)``: tiny mini models, patch and frame."""
    cases = []
    for seed, fshape, tshape, tdim, b, m in _joint_specs(hidden):
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


@checker(reference=_joint_step_loss)
def check_joint_step_loss(
    joint_step_loss: Callable[[SSASTModel, Tensor, Tensor, Tensor], Tensor], hidden: bool = False
) -> None:
    """``joint_step_loss(model, x, mask_a, mask_b)``: ``nce(mask_a) + 10 * mse(mask_b)``."""
    cases = _joint_cases(hidden)
    for case, model, x, mask_a, mask_b in cases:
        got = call_student(joint_step_loss, model, x.clone(), mask_a.clone(), mask_b.clone(),
                           case=case)
        with torch.no_grad():
            expected = _joint_step_loss(model, x, mask_a, mask_b)
            nce_a, nce_b = model.mpc(x, mask_a)[1], model.mpc(x, mask_b)[1]
            mse_a, mse_b = model.mpg(x, mask_a), model.mpg(x, mask_b)
        mistakes = [
            ("one mask for both objectives (mask_a twice); the official step draws a second "
             "mask for mpg: nce(mask_a) + 10 * mse(mask_b)", nce_a + 10 * mse_a),
            ("one mask for both objectives (mask_b twice)", nce_b + 10 * mse_b),
            ("the masks are swapped: mpc takes mask_a, mpg takes mask_b", nce_b + 10 * mse_a),
            ("a weight of 1 on the mse; the official loss is nce + 10 * mse", nce_a + mse_b),
            ("the weight 10 is on nce instead of mse", 10 * nce_a + mse_b),
            ("the mean of the two terms; the official loss is their weighted sum",
             (nce_a + 10 * mse_b) / 2),
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
    which = f"{len(cases)} hidden cases" if hidden else "a seeded patch-model case"
    passed(6, 2, f"your joint loss is the official two-mask nce + 10 * mse on {which}")


# ---------------------------------------------------------------------------- exercise 3


def _fill_and_fold(pred: Tensor, patches: Tensor, mask_ids: Tensor, grid: PatchGrid) -> Tensor:
    """The library's answer: ``pred`` scattered to ``mask_ids``, then folded (B, 1, F, T)."""
    ids = mask_ids.unsqueeze(-1).expand(-1, -1, patches.shape[-1])  # (B, M, P)
    return fold_patches(patches.scatter(1, ids, pred), grid)


def _fold_specs(hidden: bool) -> list[tuple[int, PatchGrid, int, int]]:
    """``(seed, grid, B, M)``: patches and frames; hidden, overlapping patches (averaged where
    they overlap) and a seeded random geometry."""
    specs = [(611, PatchGrid(32, 48, 16, 16, 16, 16), 2, 3),
             (612, PatchGrid(128, 8, 128, 2, 128, 2), 3, 2)]
    if hidden:
        seed = hidden_seed(613)
        g = torch.Generator().manual_seed(seed)
        stride = int(torch.randint(6, 17, (), generator=g))
        tdim = 16 + stride * int(torch.randint(1, 5, (), generator=g))
        grid = PatchGrid(32, tdim, 16, 16, stride, stride)
        specs += [(seed, grid, int(torch.randint(1, 4, (), generator=g)), 3),
                  (seed + 1, PatchGrid(128, 256, 16, 16, 16, 16), 1, 100)]
    return specs


def _fold_cases(hidden: bool) -> list[tuple[str, Tensor, Tensor, Tensor, PatchGrid]]:
    cases = []
    for seed, grid, b, m in _fold_specs(hidden):
        g = torch.Generator().manual_seed(seed)
        patches = torch.randn(b, grid.num_patches, grid.patch_dim, generator=g)  # (B, N, P)
        n = grid.num_patches
        rows = [torch.cat([torch.tensor([0, n - 1]),  # clip 0 masks both ends of the grid
                           1 + torch.randperm(n - 2, generator=g)[: m - 2]])]
        rows += [torch.randperm(n, generator=g)[:m] for _ in range(b - 1)]
        mask_ids = torch.stack([row[torch.randperm(m, generator=g)] for row in rows])  # (B, M)
        pred = torch.randn(b, m, grid.patch_dim, generator=g)  # (B, M, P)
        case = (f"seeded case {seed}: {grid.f_dim}x{grid.t_dim} grid of {grid.fshape}x"
                f"{grid.tshape} patches (stride {grid.fstride}x{grid.tstride}), B={b}, M={m}")
        cases.append((case, pred, patches, mask_ids, grid))
    return cases


@checker(reference=_fill_and_fold)
def check_fill_and_fold(
    fill_and_fold: Callable[[Tensor, Tensor, Tensor, PatchGrid], Tensor], hidden: bool = False
) -> None:
    """``fill_and_fold(pred, patches, mask_ids, grid)``: the filled-in spectrogram image."""
    cases = _fold_cases(hidden)
    for case, pred, patches, mask_ids, grid in cases:
        got = call_student(fill_and_fold, pred.clone(), patches.clone(), mask_ids.clone(), grid,
                           case=case)
        expected = _fill_and_fold(pred, patches, mask_ids, grid)
        p, m = patches.shape[-1], mask_ids.shape[1]
        ids = mask_ids.unsqueeze(-1).expand(-1, -1, p)  # (B, M, P)
        first = torch.arange(m).expand_as(mask_ids).unsqueeze(-1).expand(-1, -1, p)
        in_id_order = mask_ids.sort(1).indices.unsqueeze(-1).expand(-1, -1, p)
        mistakes = [
            ("the masked patches still hold the original values: put pred at mask_ids "
             "(patches.scatter(1, ids, pred)) before folding", fold_patches(patches, grid)),
            ("pred went to the first M patches instead of each clip's mask_ids",
             fold_patches(patches.scatter(1, first, pred), grid)),
            ("every clip used the first clip's mask_ids",
             fold_patches(patches.scatter(1, ids[:1].expand_as(ids), pred), grid)),
            ("pred[k] went to the k-th smallest masked id; it belongs at mask_ids[k] (the ids "
             "are in no particular order)",
             fold_patches(patches.scatter(1, mask_ids.sort(1).values.unsqueeze(-1)
                                          .expand(-1, -1, p), pred), grid)),
            ("pred was gathered with the sorted order of mask_ids",
             fold_patches(patches.scatter(1, ids, pred.gather(1, in_id_order)), grid)),
        ]
        check_with_hints("fill_and_fold(pred, patches, mask_ids, grid)", got, expected, mistakes,
                         case=case)
    which = f"{len(cases)} hidden cases" if hidden else "patch and frame grids"
    passed(6, 3, f"your filled-in spectrogram matches on {which} "
                 "(visible patches kept, masked ones predicted)")


# ---------------------------------------------------------------------------- extension


def _pack_cases(hidden: bool) -> list[tuple[str, list[int], int]]:
    """``(case, lengths, target)``: clip lengths in frames. Edge cases: no clip, one short
    clip, a clip exactly ``target`` long, packs that fill ``target`` exactly, long clips
    between short ones; hidden, seeded random lists."""
    cases = [
        ("no clip", [], 128),
        ("one short clip", [40], 128),
        ("a clip exactly target long, then short ones", [128, 50, 50, 28, 60], 128),
        ("short clips that fill an input exactly", [64, 64, 32, 96, 30, 40, 58], 128),
        ("long clips between short ones", [39, 500, 41, 200, 45, 44, 20, 130, 70], 128),
    ]
    if hidden:
        g = torch.Generator().manual_seed(hidden_seed(616))
        for k in range(4):
            n = int(torch.randint(5, 60, (), generator=g))
            target = int(torch.randint(20, 200, (), generator=g))
            lengths = torch.randint(1, int(1.3 * target), (n,), generator=g).tolist()
            cases.append((f"seeded list {k}: {n} clips, target {target}", lengths, target))
    return cases


def _packing_problem(groups: object, lengths: Sequence[int], target: int) -> str | None:
    """What is wrong with ``groups`` as a packing of ``lengths`` into ``target`` frames, or None."""
    if not isinstance(groups, (list, tuple)) or not all(
        isinstance(group, (list, tuple)) for group in groups
    ):
        return f"expected a list of lists of clip indices, got {type(groups).__name__}"
    seen: dict[int, int] = {}
    for k, group in enumerate(groups):
        if not group:
            return f"input {k} is an empty list: every input holds at least one clip"
        for i in group:
            if not isinstance(i, int) or not 0 <= i < len(lengths):
                return f"input {k} holds {i!r}, which is not a clip index 0..{len(lengths) - 1}"
            if i in seen:
                return (f"clip {i} is in input {seen[i]} and again in input {k}: a clip's frames "
                        "stay whole in one input (the cut tail of a pack's last clip is dropped, "
                        "not carried into the next input)")
            seen[i] = k
    missing = [i for i in range(len(lengths)) if i not in seen]
    if missing:
        return (f"clips {missing[:8]} are in no input: every clip must be used (a last, "
                "partly filled pack is kept)")
    short_inputs = []
    for k, group in enumerate(groups):
        total = sum(lengths[i] for i in group)
        longs = [i for i in group if lengths[i] >= target]
        if longs and len(group) > 1:
            return (f"clip {longs[0]} ({lengths[longs[0]]} frames) shares input {k} with others: "
                    f"a clip at least target={target} frames long fills an input alone")
        if total - lengths[group[-1]] >= target:
            return (f"input {k} {list(group)} already has {total - lengths[group[-1]]} >= "
                    f"target={target} frames before its last clip {group[-1]}: that clip is cut "
                    "away entirely and wasted (a pack is complete once it holds target frames)")
        if total < target:
            short_inputs.append(k)
    if len(short_inputs) > 1:
        k = short_inputs[0]
        total = sum(lengths[i] for i in groups[k])
        return (f"inputs {short_inputs[:6]} hold fewer than target={target} frames (input {k}: "
                f"{total}), so they are padded: keep adding clips (the last one is cut) until "
                "the input is full; only one pack, the leftovers, may be short")
    return None


@checker()
def check_pack_clips(
    pack_clips: Callable[[list[int], int], list[list[int]]], hidden: bool = False
) -> None:
    """``pack_clips(lengths, target)``: a packing with the properties every right answer has."""
    cases = _pack_cases(hidden)
    for case, lengths, target in cases:
        got = call_student(pack_clips, list(lengths), target,
                           case=f"{case} (lengths {lengths[:12]}{' ...' if len(lengths) > 12 else ''})")
        problem = _packing_problem(got, lengths, target)
        if problem:
            raise ExerciseError(f"pack_clips on {case}, lengths {lengths}, target {target}: "
                                f"{problem}")
    which = f"{len(cases)} cases with hidden lists" if hidden else f"{len(cases)} edge cases"
    passed(6, 4, f"your packing keeps every clip whole in one input, long clips alone, and fills "
                 f"every input but the leftovers without wasting a clip, on {which}")
