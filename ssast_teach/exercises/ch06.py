"""Checkers for chapter 06 (pretraining): the warm-up lr, the masked forward pass, the joint loss
of a step, the pretraining loop, fill-and-fold, and (an extension checked by its properties)
packing short clips into inputs.

The references are :func:`ssast_teach.training.warmup_lr`, ``SSASTModel.masked_outputs`` /
``mpc`` / ``mpg``, :class:`ssast_teach.pretrain.PretrainObjective`,
:func:`ssast_teach.pretrain.pretrain` itself (the loop: run for a few ci steps from the same
seeded start, every step's loss and the final weights compared) and
:func:`ssast_teach.patches.fold_patches`. Wrong answers that equal a known mistake (the mask
embedding put in after the positions, one mask for both objectives, the lr set after the step,
the scheduler stepped on the loss, ...) are named in the message. Everything a check hands the
learner's function pickles, so a grader may run the submission in another process. Packing has
many right answers, so its checker asks for the properties every one of them has: each clip
whole in exactly one input, long clips alone, every input filled, and no clip wasted.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

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
from ssast_teach.losses import info_nce_loss, mse_loss
from ssast_teach.masking import cluster_mask, frame_mask, mask_to_dense
from ssast_teach.model import SSASTModel
from ssast_teach.patches import PatchGrid, fold_patches, to_image, unfold_patches
from ssast_teach.pretrain import (
    PretrainConfig,
    PretrainObjective,
    _datasets,
    draw_masks,
    evaluate,
    pretrain,
)
from ssast_teach.training import epoch_batches, start_run, step_generator, warmup_lr

__all__ = [
    "check_fill_and_fold",
    "check_joint_step_loss",
    "check_masked_forward_pass",
    "check_pack_clips",
    "check_pretrain_loop",
    "check_warmup_lr",
]

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

_MODEL_SHORTCUTS = ("masked_outputs", "mpc", "mpg", "tokens", "embed", "_encode", "_sequence")


def _masked_forward_pass(model: SSASTModel, x: Tensor, mask_ids: Tensor):
    """The library's pass: ``(h, acc, nce, mse)`` from ``masked_outputs``, ``mpc`` and ``mpg``."""
    h, _ = model.masked_outputs(x, mask_ids)  # (B, M, D)
    acc, nce = model.mpc(x, mask_ids)
    return h, acc, nce, model.mpg(x, mask_ids)


def _mistaken_pass(model: SSASTModel, x: Tensor, mask_ids: Tensor, mistake: str):
    """``(h, acc, nce, mse)`` of one named mistake in the token path or the heads."""
    v, grid, c = model.v, model.grid, model.cls_token_num
    b, d = x.shape[0], model.mask_embed.shape[-1]
    image = to_image(x)  # (B, 1, F, T)
    patches = unfold_patches(image, grid)  # (B, N, P)
    hidden = mask_to_dense(mask_ids, grid.num_patches).unsqueeze(-1)  # (B, N, 1)
    tokens = v.patch_embed(image)  # (B, N, D)
    if mistake == "added":
        tokens = tokens + hidden * model.mask_embed
    elif mistake != "after_pos":
        tokens = torch.where(hidden, model.mask_embed, tokens)
    prefix = [v.cls_token, v.dist_token][:c]
    h = torch.cat([t.expand(b, -1, -1) for t in prefix] + [tokens], 1)  # (B, C + N, D)
    if mistake != "no_pos":
        h = h + v.pos_embed
    if mistake == "after_pos":
        h = torch.cat([h[:, :c], torch.where(hidden, model.mask_embed, h[:, c:])], 1)
    for blk in v.blocks:
        h = blk(h)
    if mistake != "no_norm":
        h = v.norm(h)
    rows = {"no_offset": mask_ids, "one_offset": mask_ids + 1,
            "sorted": mask_ids.sort(1).values + c}.get(mistake, mask_ids + c)  # (B, M)
    ids = mask_ids.sort(1).values if mistake == "sorted" else mask_ids
    h_masked = h.gather(1, rows.unsqueeze(-1).expand(-1, -1, d))  # (B, M, D)
    target = patches.gather(1, ids.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))  # (B, M, P)
    if mistake == "every_token":
        h_heads, target = h[:, c:], patches  # (B, N, D), (B, N, P)
    else:
        h_heads = h_masked
    cls_head, gen_head = ((model.gpredlayer, model.cpredlayer) if mistake == "heads_swapped"
                          else (model.cpredlayer, model.gpredlayer))
    acc, nce = info_nce_loss(cls_head(h_heads), target, softmax_quirk=mistake != "softmax_transposed")
    return h_masked, acc, nce, mse_loss(gen_head(h_heads), target)


_PASS_MISTAKES = {
    "after_pos": "the mask embedding was put in after the positional embedding was added: the "
                 "masked tokens lost their positions; the official mpc replaces the patch "
                 "embeddings first, then adds pos_embed to every token",
    "added": "the mask embedding was added to the masked patches' embeddings instead of "
             "replacing them: the model could still read the hidden patch",
    "no_offset": "the outputs were taken at mask_ids in the sequence that starts with the "
                 "class tokens: the masked patches sit cls_token_num rows further on",
    "one_offset": "the outputs were taken one row after the masked ids: the mini model has two "
                  "class tokens (cls and dist), model.cls_token_num of them",
    "sorted": "the outputs are in the sorted order of mask_ids; they belong in the order of "
              "mask_ids as given (row k is patch mask_ids[b, k])",
    "no_norm": "the outputs skip the final norm (model.v.norm) after the last block",
    "no_pos": "the positional embedding is missing",
    "every_token": "the heads ran over every patch token: the objectives score the masked "
                   "positions only (and their targets are the masked patches)",
    "heads_swapped": "the heads are swapped: cpredlayer feeds the InfoNCE, gpredlayer the MSE",
    "softmax_transposed": "the paper's softmax dimension; the official mpc keeps its own "
                     "(softmax_quirk=True, chapter 05)",
}


def _pass_specs(hidden: bool) -> list[tuple[int, int, int, int, int, int]]:
    """``(seed, fshape, tshape, input_tdim, B, M)``: a patch model with cluster masks and a
    frame model with frame masks; hidden, seeded random geometries of both kinds."""
    specs = [(621, 16, 16, 48, 2, 9), (622, 128, 2, 32, 2, 12)]
    if hidden:
        g = torch.Generator().manual_seed(hidden_seed(623))
        for k, (fshape, tshape) in enumerate(((16, 16), (128, 2))):
            tdim = int(torch.randint(2, 5, (), generator=g)) * 16  # 32, 48 or 64 frames
            n = (128 // fshape) * (tdim // tshape)
            m = int(torch.randint(3, n // 2 + 1, (), generator=g))
            b = int(torch.randint(1, 4, (), generator=g))
            specs.append((int(torch.randint(0, 2**31, (), generator=g)) + k, fshape, tshape, tdim,
                          b, m))
    return specs


class _Refused:
    """A model method switched off for the check (a class, not a closure, so that the model
    still pickles for a grader that runs the submission in another process)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *_args: object, **_kwargs: object):
        raise ExerciseError(f"model.{self.name} is what this exercise writes: build the pass "
                            "from the model's parts (model.v.patch_embed, model.mask_embed, "
                            "model.v.blocks, ...) instead")


def _forbid_shortcuts(model: SSASTModel) -> SSASTModel:
    """The model with the methods the exercise asks to write made to refuse, per instance."""
    for name in _MODEL_SHORTCUTS:
        setattr(model, name, _Refused(name))
    return model


@checker(reference=_masked_forward_pass)
def check_masked_forward_pass(
    masked_forward_pass: Callable[[SSASTModel, Tensor, Tensor], tuple], hidden: bool = False
) -> None:
    """``masked_forward_pass(model, x, mask_ids)``: ``(h, acc, nce, mse)`` as ``SSASTModel``."""
    specs = _pass_specs(hidden)
    for seed, fshape, tshape, tdim, b, m in specs:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = SSASTModel.for_pretraining("mini", fshape, tshape, 128, tdim).eval()
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(b, tdim, 128, generator=g) * 0.5  # (B, T, F)
        draw = frame_mask if fshape == 128 else cluster_mask
        mask_ids = draw(b, model.grid.num_patches, m, model.grid.t_dim, generator=g)  # (B, M)
        # the draws come sorted; the contract says "in no particular order"
        mask_ids = mask_ids.gather(1, torch.rand(b, m, generator=g).argsort(1))
        kind = "frame masks" if fshape == 128 else "cluster masks"
        case = (f"seeded case {seed}: mini {fshape}x{tshape} model, x {(b, tdim, 128)}, "
                f"{kind} {(b, m)}")
        with torch.no_grad():
            expected = _masked_forward_pass(model, x, mask_ids)
        student = _forbid_shortcuts(copy.deepcopy(model))
        got = call_student(masked_forward_pass, student, x.clone(), mask_ids.clone(), case=case)
        if not isinstance(got, (tuple, list)) or len(got) != 4:
            raise ExerciseError(f"masked_forward_pass on {case} should return (h, acc, nce, mse), "
                                f"got {type(got).__name__}")
        n, d = model.grid.num_patches, model.mask_embed.shape[-1]
        if isinstance(got[0], Tensor) and tuple(got[0].shape) in ((b, n, d), (b, n + 2, d)):
            raise ExerciseError(
                f"h on {case} has shape {tuple(got[0].shape)}: every token's output; h holds the "
                f"outputs at the masked patches only, (B, M, D) = {(b, m, d)}, in mask_ids order")
        with torch.no_grad():
            wrong = {key: _mistaken_pass(model, x, mask_ids, key) for key in _PASS_MISTAKES}
        for i, name in enumerate(("h", "acc", "nce", "mse")):
            mistakes = [(hint, wrong[key][i]) for key, hint in _PASS_MISTAKES.items()]
            check_with_hints(f"{name} of masked_forward_pass(model, x, mask_ids)", got[i],
                             expected[i], mistakes, case=case, atol=1e-6, rtol=1e-6)
    which = f"{len(specs)} hidden cases" if hidden else "a patch model and a frame model"
    passed(6, 2, f"your masked forward pass gives SSASTModel's outputs, accuracy, InfoNCE and "
                 f"MSE on {which}")


# ---------------------------------------------------------------------------- exercise 3


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
    passed(6, 3, f"your joint loss is the official two-mask nce + 10 * mse on {which}")


# ---------------------------------------------------------------------------- exercise 4


def _loop_config(hidden: bool) -> PretrainConfig:
    """The ci preset, run long enough for the plateau scheduler to act: an evaluation every
    step after a short warm-up, patience 0; hidden, a seeded run of a frame model too."""
    settings = dict(epochs=6, epoch_iter=2, lr=2e-3, warmup_steps=3, lr_patience=0,
                    device="cpu", precision="fp32")
    if not hidden:
        return PretrainConfig.preset("ci", **settings)
    g = torch.Generator().manual_seed(hidden_seed(641))
    seed = int(torch.randint(0, 2**31, (), generator=g))
    return PretrainConfig.preset("ci", **settings, seed=seed, fshape=128, tshape=2, mask_patch=20,
                                 warmup_every=int(torch.randint(1, 3, (), generator=g)))


def _loop_run(config: PretrainConfig, out_dir: Path):
    """``(model, batches, val)`` as ``pretrain(config)`` starts: the same seeded initial
    weights, its batches in ``epoch_batches`` order, its held-out clips (in memory: the
    clips' files live in ``out_dir``, which the learner's loop may not see)."""
    with torch.random.fork_rng(devices=[]):
        device, env, precision = start_run(config.device, config.precision, config.seed)
        train_ds, val_ds = _datasets(config, out_dir)
        model = SSASTModel.for_pretraining(config.size, config.fshape, config.tshape,
                                           config.input_fdim, config.input_tdim).to(device)
    batches = [torch.stack([train_ds[i][0] for i in ids])  # (B, T, F) each
               for epoch in range(config.epochs)
               for ids in epoch_batches(train_ds, config.batch_size, config.seed, epoch, env)]
    return model, batches[: config.max_steps], list(val_ds)


class _Evaluator:
    """``evaluate()``: pretrain()'s held-out metrics of ``model`` now (fp32 on the CPU). A class
    rather than a closure, so that it pickles with the model it evaluates."""

    def __init__(self, model: SSASTModel, val: list, config: PretrainConfig) -> None:
        self.model, self.val, self.config = model, val, config

    def __call__(self) -> dict[str, float]:
        objective = PretrainObjective(self.model, self.config)
        return evaluate(objective, self.val, self.config, torch.device("cpu"), "fp32")


def _mistaken_loop(model: SSASTModel, config: PretrainConfig, batches: list[Tensor],
                   evaluate_now: Callable[[], dict], mistake: str,
                   until_unlike: Sequence[float] | None = None) -> list[float]:
    """The official loop with one named mistake; returns the loss of every step, or of the
    steps up to the first that is unlike ``until_unlike`` (the rest cannot match then)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    betas, decay = ((0.9, 0.999), 0.0) if mistake == "adam_defaults" else (config.betas,
                                                                            config.weight_decay)
    optimizer = torch.optim.Adam(trainable, config.base_lr, betas=betas, weight_decay=decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min" if mistake == "scheduler_min" else "max",
        factor=config.lr_factor, patience=config.lr_patience)
    run_generator = step_generator(config.seed, 0)
    losses = []
    for step, x in enumerate(batches):
        at = step + 1 if mistake == "step_from_1" else step
        lr = warmup_lr(at, config.base_lr, config.warmup_steps, config.warmup_every)
        if lr is not None and mistake not in ("no_warmup", "lr_after_step"):
            for group in optimizer.param_groups:
                group["lr"] = lr
        generator = run_generator if mistake == "run_generator" else step_generator(config.seed, at)
        mpc_mask = draw_masks(config, model.grid.t_dim, len(x), generator, config.mask_patch)
        mpg_mask = (mpc_mask if mistake == "one_mask" else
                    draw_masks(config, model.grid.t_dim, len(x), generator, config.mask_patch))
        acc, nce = model.mpc(x, mpc_mask)
        mse = model.mpg(x, mpg_mask)
        loss = nce + (1.0 if mistake == "mse_weight_1" else config.mse_weight) * mse
        if mistake != "no_zero_grad":
            optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if lr is not None and mistake == "lr_after_step":
            for group in optimizer.param_groups:
                group["lr"] = lr
        losses.append(loss.item())
        if until_unlike is not None and (step >= len(until_unlike) or not math.isclose(losses[-1], until_unlike[step],
                                                         rel_tol=0, abs_tol=1e-6)):
            break
        if (step if mistake == "eval_before_count" else step + 1) % config.epoch_iter == 0:
            metrics = evaluate_now()
            scheduler.step({"scheduler_on_loss": loss.item(), "scheduler_on_nce": metrics["val_nce"]}
                           .get(mistake, metrics["val_acc"]))
    return losses


_LOOP_MISTAKES = {
    "lr_after_step": "the warm-up lr is set after optimizer.step(): each step ran with the "
                     "previous step's lr; the official loop sets it before the step",
    "no_warmup": "the warm-up lr is never applied",
    "one_mask": "one mask for both objectives: the official step draws two, mpc_mask then "
                "mpg_mask, from the step's generator",
    "run_generator": "the masks come from one generator for the whole run; they come from "
                     "step_generator(config.seed, step), the generator of each step",
    "step_from_1": "the steps are counted from 1: the first step is step 0 (its warm-up lr is 0, "
                   "its generator step_generator(seed, 0))",
    "scheduler_on_loss": "the plateau scheduler is stepped on the training loss; it follows the "
                         "held-out masked-patch accuracy, metrics['val_acc']",
    "scheduler_on_nce": "the plateau scheduler is stepped on val_nce; it follows the held-out "
                        "masked-patch accuracy, metrics['val_acc']",
    "scheduler_min": "the plateau scheduler is in mode 'min': a higher accuracy is better, "
                     "mode='max'",
    "eval_before_count": "the evaluations come one step early: the official loop evaluates "
                         "after the step that brings the number of steps taken to a multiple "
                         "of config.epoch_iter",
    "no_zero_grad": "zero_grad is missing: every step's gradient is added to the previous ones",
    "adam_defaults": "Adam with its default betas and no weight decay; the official ones are "
                     "config.betas (0.95, 0.999) and config.weight_decay (5e-7)",
    "mse_weight_1": "the loss weighs the mse by 1; the official joint loss is nce + 10 * mse",
}


_REFERENCE_RUNS: dict[str, tuple[list[float], dict[str, Tensor]]] = {}


def _pretrain_reference(config: PretrainConfig) -> tuple[list[float], dict[str, Tensor]]:
    """``pretrain(config)``'s step losses and final weights, run once per config (a failed
    check is usually run again soon)."""
    if repr(config) not in _REFERENCE_RUNS:
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
            model, history = pretrain(config, out_dir=tmp)  # its log lines go nowhere
        _REFERENCE_RUNS[repr(config)] = ([row["loss"] for row in history.where("step")],
                                         model.state_dict())
    return _REFERENCE_RUNS[repr(config)]


def _loop_mismatch(got: list[float], losses: list[float], model: SSASTModel,
                   expected: dict[str, Tensor]) -> str | None:
    """Where a loop's step losses and final weights part from another run's, or None."""
    if len(got) != len(losses):
        return f"{len(got)} losses where the run has {len(losses)} steps"
    for step, (a, b) in enumerate(zip(got, losses, strict=True)):
        if not math.isclose(a, b, rel_tol=0, abs_tol=1e-6):
            return f"the loss of step {step} is {a:.6f}, pretrain() had {b:.6f}"
    for (name, a), b in zip(model.state_dict().items(), expected.values(), strict=True):
        if (a.detach().double() - b.double()).abs().max() > 1e-6:
            return f"the losses match but the final weights differ ({name})"
    return None


@checker()
def check_pretrain_loop(
    pretrain_loop: Callable[[SSASTModel, PretrainConfig, list[Tensor], Callable[[], dict]], list],
    hidden: bool = False,
) -> None:
    """``pretrain_loop(model, config, batches, evaluate)``: the losses and final weights of
    ``pretrain(config)``, run on the ci data for a few steps."""
    config = _loop_config(hidden)
    with tempfile.TemporaryDirectory() as tmp:
        model, batches, val = _loop_run(config, Path(tmp))
    initial = copy.deepcopy(model)
    case = (f"{len(batches)} steps of the ci preset ({config.fshape}x{config.tshape} patches, "
            f"seed {config.seed}, an evaluation every {config.epoch_iter} step(s))")
    got = call_student(pretrain_loop, model, config, batches,
                       _Evaluator(model, val, config), case=case)
    try:
        got = [float(loss) for loss in got]
    except (TypeError, ValueError):
        raise ExerciseError(f"pretrain_loop on {case} returned {type(got).__name__}; "
                            "expected a list of the step losses (floats)") from None
    losses, expected = _pretrain_reference(config)
    problem = _loop_mismatch(got, losses, model, expected)
    if problem:
        hints = []
        for key, hint in _LOOP_MISTAKES.items():
            wrong = copy.deepcopy(initial)
            wrong_losses = _mistaken_loop(wrong, config, batches,
                                          _Evaluator(wrong, val, config), key, got)
            if _loop_mismatch(got, wrong_losses, model, wrong.state_dict()) is None:
                hints.append(hint)
        looks = f" -- it looks like {'; or '.join(hints)}" if hints else ""
        raise ExerciseError(f"pretrain_loop on {case}: {problem}{looks}")
    passed(6, 4, f"your loop gives pretrain()'s loss at each of {len(losses)} steps (an "
                 f"evaluation every {config.epoch_iter}, patience {config.lr_patience}) and its "
                 f"final weights{' on a hidden seeded run' if hidden else ''}")


# ---------------------------------------------------------------------------- exercise 5


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
        given = patches.clone()
        got = call_student(fill_and_fold, pred.clone(), given, mask_ids.clone(), grid, case=case)
        expected = _fill_and_fold(pred, patches, mask_ids, grid)
        if not torch.equal(given, patches):
            raise ExerciseError(
                f"fill_and_fold on {case} changed the caller's patches: it wrote pred into the "
                "tensor it was given (an in-place scatter_ or an index assignment), so the "
                "caller's own copy of the visible spectrogram now holds predictions; fill a new "
                "tensor and leave the argument as it was")
        p, m = patches.shape[-1], mask_ids.shape[1]
        ids = mask_ids.unsqueeze(-1).expand(-1, -1, p)  # (B, M, P)
        first = torch.arange(m).expand_as(mask_ids).unsqueeze(-1).expand(-1, -1, p)
        in_id_order = mask_ids.sort(1).indices.unsqueeze(-1).expand(-1, -1, p)
        mistakes = [
            ("the masked patches still hold the original values: pred replaces them before "
             "the patches are folded", fold_patches(patches, grid)),
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
    passed(6, 5, f"your filled-in spectrogram matches on {which} "
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
    passed(6, 6, f"your packing keeps every clip whole in one input, long clips alone, and fills "
                 f"every input but the leftovers without wasting a clip, on {which}")
