"""Checkers for chapter 07 (fine-tuning): average precision with ties, the confusion matrix,
linear probing, the fine-tuning loop, and (an extension checked by its properties) a
padding-aware pooling.

The references are :func:`ssast_teach.finetune.average_precision`,
:func:`ssast_teach.finetune.confusion_matrix`, :func:`ssast_teach.finetune.param_groups`
with ``linear_probe=True`` and :func:`ssast_teach.finetune.finetune` itself: the learner's loop
runs on the same seed, data and start weights, and its losses and final weights must equal the
library's. Wrong answers that equal a known mistake (tied scores ranked one by one, a transposed
matrix, precision averaged over every rank, a frozen head norm, the head's lr not multiplied,
the scheduler stepped per step, the last epoch kept instead of the best validation epoch, the
official mean over padded tokens, ...) are named in the message.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.utils.data import DataLoader

from ssast_teach.datasets import DataSplit, make_synthetic_dataset
from ssast_teach.exercises import (
    ExerciseError,
    NotImplementedYet,
    call_student,
    check_tensor,
    check_with_hints,
    checker,
    hidden_seed,
    passed,
)
from ssast_teach.finetune import (
    HEAD,
    FinetuneConfig,
    _datasets,
    _model,
    average_precision,
    confusion_matrix,
    finetune,
    param_groups,
    predict,
    scores_of,
)
from ssast_teach.model import SSASTModel, attention_for
from ssast_teach.training import epoch_batches, start_run, warmup_lr

__all__ = [
    "check_average_precision",
    "check_confusion",
    "check_finetune_loop",
    "check_linear_probe",
    "check_real_token_mean",
]

# ---------------------------------------------------------------------------- exercise 1


def _average_precision(scores: Tensor, labels: Tensor) -> float:
    """The library's AP (tied scores form one threshold), with the exercise's signature."""
    return average_precision(scores, labels)


def _ap_cases(hidden: bool) -> list[tuple[str, Tensor, Tensor]]:
    """Seeded ``(case, scores (N,), labels (N,))``, at least one positive each. Visible: distinct
    scores, and coarse scores full of ties (runs with several positives and a negative, where
    any one-by-one order of a tie gives another AP); hidden: seeded random lists of both kinds,
    a single clip, all positives, and every score tied."""
    specs = [(701, 10, 0.4, None), (702, 25, 0.3, 4)]  # (seed, N, positive rate, score levels)
    if hidden:
        seed = hidden_seed(703)
        g = torch.Generator().manual_seed(seed)
        for k in range(4):
            n = int(torch.randint(8, 200, (), generator=g))
            rate = float(0.05 + 0.9 * torch.rand((), generator=g))
            levels = (None, 3, 5, 10)[k]
            specs.append((seed + k, n, rate, levels))
    cases = []
    for seed, n, rate, levels in specs:
        g = torch.Generator().manual_seed(seed)
        labels = (torch.rand(n, generator=g) < rate).float()
        labels[int(torch.randint(n, (), generator=g))] = 1.0  # at least one positive
        scores = torch.randn(n, generator=g) + 1.5 * labels  # distinct with probability 1
        if levels is not None:  # ties: scores on a coarse grid of `levels` values
            scores = (scores * levels / 4).round() / (levels / 4)
        kind = "distinct scores" if levels is None else f"{len(scores.unique())} tied score levels"
        cases.append((f"seeded case {seed}: {n} clips, {int(labels.sum())} positives, {kind}",
                      scores, labels))
    if hidden:
        cases += [
            ("one clip, a positive", torch.tensor([0.3]), torch.tensor([1.0])),
            ("all positives", torch.tensor([0.1, 0.7, 0.7, -2.0]), torch.ones(4)),
            ("every score tied", torch.zeros(6), torch.tensor([0.0, 1, 0, 1, 1, 0])),
        ]
    return cases


def _ap_one_by_one(scores: Tensor, labels: Tensor, order: Tensor) -> float:
    """AP if the clips were ranked in ``order``, one at a time (ties split arbitrarily)."""
    hits = labels[order]
    precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / hits.sum())


def _tie_extremes(scores: Tensor, labels: Tensor) -> tuple[float, float]:
    """The lowest and highest AP of a one-by-one ranking by score: every way of splitting ties
    gives an AP between negatives-first and positives-first."""
    aps = []
    for key in (-labels.double(), labels.double()):
        by_key = key.argsort(descending=True, stable=True)
        order = by_key[scores[by_key].argsort(descending=True, stable=True)]
        aps.append(_ap_one_by_one(scores, labels, order))
    return aps[0], aps[1]


def _ap_hint(got: float, scores: Tensor, labels: Tensor) -> str:
    low, high = _tie_extremes(scores, labels)
    if low < high and low - 1e-9 <= got <= high + 1e-9:
        return (" -- it looks like tied clips were ranked one by one (in whatever order the sort "
                "left them); tied scores are one threshold: the list grows by the whole tie at "
                "once, and every positive in it gets the precision of the list with the whole "
                "tie included")
    if math.isclose(got, average_precision(-scores, labels), rel_tol=1e-6):
        return " -- it looks like the clips were ranked from the lowest score up"
    order = scores.argsort(descending=True, stable=True)
    hits = labels[order]
    precision = hits.cumsum(0) / torch.arange(1, len(scores) + 1)
    if math.isclose(got, float(precision.mean()), rel_tol=1e-6):
        return (" -- it looks like the precision was averaged over every rank; AP averages it "
                "only at the ranks of the positive clips")
    if math.isclose(got, float((precision * hits).sum() / len(scores)), rel_tol=1e-6):
        return (" -- it looks like the sum was divided by the number of clips; AP is the mean "
                "over the positive clips")
    return ""


@checker(reference=_average_precision)
def check_average_precision(
    average_precision_fn: Callable[[Tensor, Tensor], float], hidden: bool = False
) -> None:
    """``average_precision_fn(scores, labels)``: one class's AP as a Python float, ties as one
    threshold (scikit-learn's ``average_precision_score``)."""
    cases = _ap_cases(hidden)
    for case, scores, labels in cases:
        got = call_student(average_precision_fn, scores.clone(), labels.clone(), case=case)
        expected = _average_precision(scores, labels)
        if isinstance(got, Tensor) and got.numel() == 1:
            got = got.item()
        if not isinstance(got, (int, float)):
            raise ExerciseError(
                f"average_precision on {case} returned a {type(got).__name__}; expected a number"
            )
        if not math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-9):
            raise ExerciseError(
                f"average_precision on {case} returned {got:.6g}, expected {expected:.6g}"
                f"{_ap_hint(got, scores, labels)}"
            )
    which = f"{len(cases)} hidden cases" if hidden else "distinct and tied scores"
    passed(7, 1, f"your average precision equals ssast_teach.finetune.average_precision on {which}")


# ---------------------------------------------------------------------------- exercise 2


def _confusion(scores: Tensor, targets: Tensor) -> Tensor:
    """The library's confusion matrix, with the exercise's signature."""
    return confusion_matrix(scores, targets)


def _confusion_cases(hidden: bool) -> list[tuple[str, Tensor, Tensor]]:
    """Seeded ``(case, scores (N, C), one-hot targets (N, C))``; one case where the last class
    is never true nor predicted (its row and column are zero, but still there)."""
    specs = [(711, 12, 3), (712, 40, 5)]  # (seed, N, C)
    if hidden:
        seed = hidden_seed(713)
        g = torch.Generator().manual_seed(seed)
        specs += [(seed, 1, 4)]
        specs += [(seed + 1 + k, int(torch.randint(2, 300, (), generator=g)),
                   int(torch.randint(2, 12, (), generator=g))) for k in range(2)]
    cases = []
    for seed, n, c in specs:
        g = torch.Generator().manual_seed(seed)
        targets = nn.functional.one_hot(torch.randint(c, (n,), generator=g), c).float()  # (N, C)
        scores = torch.randn(n, c, generator=g) + 1.2 * targets  # (N, C) logits
        cases.append((f"seeded case {seed}: {n} clips, {c} classes", scores, targets))
    g = torch.Generator().manual_seed(714)
    targets = nn.functional.one_hot(torch.randint(3, (9,), generator=g), 4).float()  # (9, 4)
    scores = torch.randn(9, 4, generator=g) + 2.0 * targets
    scores[:, 3] = -10.0  # class 3: never true, never predicted
    cases.append(("9 clips, 4 classes, class 3 never true nor predicted", scores, targets))
    return cases


@checker(reference=_confusion)
def check_confusion(
    confusion: Callable[[Tensor, Tensor], Tensor], hidden: bool = False
) -> None:
    """``confusion(scores, targets)``: ``(C, C)`` int64 counts, rows true, columns predicted."""
    cases = _confusion_cases(hidden)
    for case, scores, targets in cases:
        c = scores.shape[1]
        absent = ("every class has a row and a column, even one that never occurs (bincount "
                  "needs minlength=C * C)")
        try:
            got = call_student(confusion, scores.clone(), targets.clone(), case=case)
        except NotImplementedYet:
            raise
        except ExerciseError as error:
            if "never" not in case:
                raise
            raise ExerciseError(f"{error}: {absent}") from None
        expected = _confusion(scores, targets)
        if isinstance(got, Tensor) and got.dim() == 2 and got.shape != expected.shape:
            raise ExerciseError(
                f"confusion(scores, targets) on {case} has shape {tuple(got.shape)}, expected "
                f"{(c, c)}: {absent}"
            )
        mistakes = [("rows and columns are swapped: rows are the true class (argmax of targets), "
                     "columns the predicted class (argmax of scores)", expected.T)]
        check_with_hints("confusion(scores, targets)", got, expected, mistakes, case=case)
    which = f"{len(cases)} hidden cases" if hidden else "seeded cases and a class that never occurs"
    passed(7, 2, f"your confusion matrix equals ssast_teach.finetune.confusion_matrix on {which}")


# ---------------------------------------------------------------------------- exercise 3


def _freeze_for_linear_probe(model: SSASTModel) -> list:
    """The library's linear probe (``param_groups(..., linear_probe=True)``): the head's params."""
    return param_groups(model, FinetuneConfig(linear_probe=True))[0]["params"]


def _probe_model(seed: int, input_tdim: int) -> SSASTModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sd = SSASTModel.for_pretraining("mini", input_tdim=input_tdim).state_dict()
        return SSASTModel.for_finetuning(sd, n_classes=5, fstride=16, tstride=16,
                                         input_tdim=input_tdim)


@checker(reference=_freeze_for_linear_probe)
def check_linear_probe(
    freeze_for_linear_probe: Callable[[SSASTModel], list], hidden: bool = False
) -> None:
    """``freeze_for_linear_probe(model)``: freeze all but ``mlp_head``, return its parameters."""
    sizes = [(721, 32)]
    if hidden:
        seed = hidden_seed(722)
        g = torch.Generator().manual_seed(seed)
        sizes.append((seed, 16 * int(torch.randint(2, 6, (), generator=g))))
    for seed, tdim in sizes:
        model = _probe_model(seed, tdim)
        case = f"a mini fine-tuning model (seed {seed}, {tdim} frames, 5 classes)"
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        got = call_student(freeze_for_linear_probe, model, case=case)
        named = dict(model.named_parameters())
        should_train = sorted(n for n in named if n.startswith(HEAD))
        training = sorted(n for n, p in named.items() if p.requires_grad)
        if training != should_train:
            frozen_head = [n for n in should_train if n not in training]
            still = [n for n in training if n not in should_train]
            parts = []
            if frozen_head:
                parts.append(f"these head parameters are frozen but must train: {frozen_head} "
                             "(the official head is LayerNorm + Linear: both train)")
            if still:
                parts.append(f"these encoder parameters still train: {still[:6]}"
                             + (f" and {len(still) - 6} more" if len(still) > 6 else ""))
            raise ExerciseError(f"on {case}: " + "; ".join(parts))
        if any(not torch.equal(before[n], p) for n, p in named.items()):
            raise ExerciseError(f"on {case}: the parameter values changed; only freeze them "
                                "(requires_grad_(False)), do not modify them")
        try:
            got_ids = sorted(id(p) for p in got)
        except TypeError:
            raise ExerciseError(
                f"freeze_for_linear_probe on {case} returned a {type(got).__name__}; expected a "
                "list of the parameters the optimiser should train"
            ) from None
        want_ids = sorted(id(named[n]) for n in should_train)
        if got_ids != want_ids:
            raise ExerciseError(
                f"freeze_for_linear_probe on {case} returned {len(got_ids)} tensors; expected the "
                f"{len(want_ids)} parameters of mlp_head (the model's own tensors, not copies)"
            )
    passed(7, 3, "only mlp_head trains; the encoder is frozen as a linear probe needs")


# ---------------------------------------------------------------------------- exercise 4


def _loop_data(out_dir: Path, seed: int) -> dict[str, str]:
    """Own data with a validation split, as official datafiles: a synthetic set cut into train
    (half the clips), validation and test (a quarter each)."""
    every = make_synthetic_dataset(out_dir / "synthetic", n_per_class=8, seed=seed)
    parts = {"train_json": every.items[0::2], "val_json": every.items[1::4],
             "eval_json": every.items[3::4]}
    files = {key: str(DataSplit(key, items, every.labels).to_datafile(out_dir / f"{key}.json"))
             for key, items in parts.items()}
    return files | {"label_csv": str(out_dir / "synthetic" / "synthetic_class_labels_indices.csv")}


def _loop_cases(hidden: bool, out_dir: Path) -> list[tuple[str, FinetuneConfig]]:
    """``(case, config)``: the three official recipes at ci size, 3 epochs of 4 steps in fp32.
    ESC-50's (patch model, CE, no warm-up, no validation split: the final epoch), Speech
    Commands' (frame model, BCE, mixup, a short warm-up, a validation split: its best epoch)
    and AudioSet's (BCE, mixup, weight averaging of epochs 2-3); hidden: the same recipes with
    seeded head lr multipliers, seeds and schedules, and the corrected warm-up."""
    seed, head_lrs, start, quirk = 0, (4.0, 3.0, 2.0), (1, 2, 1), True
    if hidden:
        g = torch.Generator().manual_seed(hidden_seed(741))
        seed = int(torch.randint(1, 1000, (), generator=g))
        head_lrs = tuple(float(torch.randint(2, 11, (), generator=g)) for _ in range(3))
        start, quirk = (2, 1, 2), False
    common = dict(epochs=3, synthetic_per_class=6, wa_start=2, wa_end=3, precision="fp32",
                  device="cpu", seed=seed, progress=False)
    return [
        ("the ESC-50 recipe (patch model, CE, no warm-up, no validation split)",
         FinetuneConfig.preset("esc50", "ci", head_lr=head_lrs[0], lrscheduler_start=start[0],
                               **common)),
        ("the Speech Commands recipe (frame model, BCE, mixup, warm-up, a validation split)",
         FinetuneConfig.preset("speechcommands", "ci", fstride=128, tstride=2,
                               head_lr=head_lrs[1], lrscheduler_start=start[1], warmup_steps=8,
                               warmup_every=2, warmup_quirk=quirk,
                               **_loop_data(out_dir / "speechcommands", seed), **common)),
        ("the AudioSet recipe (BCE, mixup, weight averaging of epochs 2-3)",
         FinetuneConfig.preset("audioset20k", "ci", head_lr=head_lrs[2],
                               lrscheduler_start=start[2], lrscheduler_step=1, **common)),
    ]


def _start_weights(config: FinetuneConfig) -> dict[str, Tensor]:
    """A (random) pretrained ``mini`` model of the case's geometry, drawn from its own seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(740 + config.seed)
        return SSASTModel.for_pretraining("mini", config.fshape, config.tshape, config.input_fdim,
                                          config.input_tdim).state_dict()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No log lines from the library's runs: the check prints its one line."""
    before = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(before)


def _state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


class _Recorder:
    """What the learner's loop is handed (``batches``, ``evaluate``), recording what it does:
    the epochs it asks for, each optimiser step's groups and settings (a global step hook),
    the validations, and the weights at every epoch's end."""

    def __init__(self, model: SSASTModel, config: FinetuneConfig, train_ds, val_ds, env,
                 device: torch.device, precision: str, epoch_rng: list[Tensor]) -> None:
        self.model, self.config, self.train_ds, self.val_ds = model, config, train_ds, val_ds
        self.env, self.device, self.precision = env, device, precision
        self.epoch_rng = epoch_rng
        self.start = _state(model)
        self.first_batch: tuple[Tensor, Tensor] | None = None
        self.epochs_asked: list[int] = []
        self.steps: list[dict] = []
        self.validated: list[int] = []  # epochs finished when evaluate saw val_ds
        self.epoch_ends: list[dict[str, Tensor]] = []

    def batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Epoch ``epoch``'s batches ``(x (B, T, F), y (B, C))`` (1-based, the official
        numbering) as finetune() draws them: its order and its augmentation. From the second
        epoch on, the RNG is set to where finetune()'s was after its epoch-end evaluations (each
        draws a DataLoader seed), so what the learner evaluates between epochs does not change
        the batches."""
        self.epochs_asked.append(epoch)
        c = self.config
        if 1 < epoch <= len(self.epoch_rng) + 1:
            torch.set_rng_state(self.epoch_rng[epoch - 2])
        order = epoch_batches(self.train_ds, c.batch_size, c.seed, epoch - 1, self.env)
        loader = DataLoader(self.train_ds, batch_sampler=order,
                            generator=torch.Generator().manual_seed(c.seed + epoch - 1))
        for x, y in loader:
            if self.first_batch is None:
                self.first_batch = (x, y)
            yield x.to(self.device), y.to(self.device)
        self.epoch_ends.append(_state(self.model))

    def evaluate(self, model: nn.Module, dataset) -> dict[str, float]:
        """``{"acc", "mAP", "loss"}`` of ``model`` on ``dataset``, as finetune() scores it."""
        if dataset is self.val_ds:
            self.validated.append(len(self.epoch_ends))
        logits, targets = predict(model, dataset, 2 * self.config.batch_size, self.device,
                                  self.precision)
        return scores_of(logits, targets, self.config)

    def on_step(self, optimizer: torch.optim.Optimizer, args, kwargs) -> None:
        self.steps.append({
            "optimizer": type(optimizer).__name__,
            "groups": [({id(p) for p in g["params"]}, g["lr"], tuple(g.get("betas", ())),
                        g.get("weight_decay")) for g in optimizer.param_groups],
        })


LR_MISTAKES = {
    "head": "the head's lr is not multiplied: mlp_head trains at lr * head_lr, the rest at lr",
    "flat warm-up": "the warm-up set every group to the same lr, so the head lost its head_lr "
                    "multiplier: each group warms up to its own lr (traintest.py keeps lr_list)",
    "no warm-up": "there is no warm-up, but config.warmup is True",
    "warm-up when off": "the lr was warmed up, but config.warmup is False",
    "warm-up after": "the warm-up lr is applied after the step; set it before the step it is "
                     "for (step 0 trains at warm-up factor 0)",
    "scheduler per step": "the scheduler is stepped after every batch; MultiStepLR steps once "
                          "per epoch, after the epoch's validation",
    "scheduler never": "the scheduler is never stepped: MultiStepLR steps once per epoch",
    "scheduler first": "the scheduler is stepped at the start of each epoch; it steps at the "
                       "end, after the epoch's validation",
}


def _lr_schedule(config: FinetuneConfig, steps_per_epoch: int,
                 mistake: str | None = None) -> list[tuple[float, float]]:
    """``(encoder lr, head lr)`` of every step under the official schedule (``mistake`` None)
    or one of :data:`LR_MISTAKES`, simulated on a two-parameter optimiser."""
    head_lr = 1.0 if mistake == "head" else config.head_lr
    weights = [nn.Parameter(torch.zeros(1)) for _ in range(2)]
    optimizer = torch.optim.SGD([{"params": weights[:1], "lr": config.lr},
                                 {"params": weights[1:], "lr": config.lr * head_lr}])
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, list(range(config.lrscheduler_start, 1000, config.lrscheduler_step)),
        gamma=config.lrscheduler_decay)
    warmup = config.warmup != (mistake in ("no warm-up", "warm-up when off"))

    def warm(step: int) -> None:
        factor = warmup_lr(step, 1.0, config.warmup_steps, config.warmup_every,
                           warmup_quirk=config.warmup_quirk) if warmup else None
        if factor is not None:
            for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                group["lr"] = factor * (config.lr if mistake == "flat warm-up" else base)

    lrs, step = [], 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scheduler first" steps it before the optimiser
        for _ in range(config.epochs):
            if mistake == "scheduler first":
                scheduler.step()
            for _ in range(steps_per_epoch):
                if mistake != "warm-up after":
                    warm(step)
                lrs.append(tuple(g["lr"] for g in optimizer.param_groups))
                optimizer.step()
                if mistake == "warm-up after":
                    warm(step)
                step += 1
                if mistake == "scheduler per step":
                    scheduler.step()
            if mistake not in ("scheduler per step", "scheduler never", "scheduler first"):
                scheduler.step()
    return lrs


def _same(a: Sequence[float], b: Sequence[float]) -> bool:
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-15)
                                    for x, y in zip(a, b, strict=True))


def _check_optimiser(rec: _Recorder, config: FinetuneConfig, steps_per_epoch: int) -> None:
    """The optimiser of every step: Adam, the official betas and weight decay, every parameter
    in a group, and the (encoder, head) lrs of the official schedule."""
    named = dict(rec.model.named_parameters())
    head = {id(p) for n, p in named.items() if n.startswith(HEAD)}
    every = {id(p) for p in named.values()}
    got = []
    for k, step in enumerate(rec.steps):
        where = f"at optimiser step {k} (epoch {k // steps_per_epoch + 1})"
        if step["optimizer"] != "Adam":
            raise ExerciseError(f"{where} the optimiser is {step['optimizer']}; the official one "
                                "is Adam (src/traintest.py: torch.optim.Adam, whose weight decay "
                                "is added to the gradient)")
        members = set().union(*(ids for ids, *_ in step["groups"]))
        if members != every:
            missing = sorted(n for n, p in named.items() if id(p) not in members)
            raise ExerciseError(f"{where} these parameters are in no parameter group, so they "
                                f"never train: {missing[:6]}" + (f" and {len(missing) - 6} more"
                                                                  if len(missing) > 6 else ""))
        for _, _, betas, decay in step["groups"]:
            if betas != tuple(config.betas) or decay != config.weight_decay:
                raise ExerciseError(
                    f"{where} a parameter group has betas {betas} and weight_decay {decay}; the "
                    f"official Adam has betas {tuple(config.betas)} and weight_decay "
                    f"{config.weight_decay:g} (config.betas, config.weight_decay)")
        lrs = [(ids, lr) for ids, lr, *_ in step["groups"]]
        got.append(tuple(next(lr for ids, lr in lrs if ids & part) for part in (every - head, head)))
    want = _lr_schedule(config, steps_per_epoch)
    if all(_same(g, w) for g, w in zip(got, want, strict=True)):
        return
    looks = [message for mistake, message in LR_MISTAKES.items()
             if (wrong := _lr_schedule(config, steps_per_epoch, mistake)) != want
             and all(_same(g, w) for g, w in zip(got, wrong, strict=True))]
    if looks:  # a warm-up that ends inside the run makes two mistakes look alike
        raise ExerciseError("the learning rates differ from the official schedule: it looks "
                            f"like {'; or '.join(looks)}")
    k = next(i for i, (g, w) in enumerate(zip(got, want, strict=True)) if not _same(g, w))
    raise ExerciseError(
        f"at optimiser step {k} (epoch {k // steps_per_epoch + 1}) the lrs of the encoder and the head "
        f"were ({got[k][0]:.6g}, {got[k][1]:.6g}), expected ({want[k][0]:.6g}, {want[k][1]:.6g}) "
        "(warm-up before each step, MultiStepLR once per epoch)")


def _loss_hint(rec: _Recorder, config: FinetuneConfig, got: float) -> str:
    """Name the loss of the first step when it equals a known mistake's."""
    x, y = rec.first_batch
    model = copy.deepcopy(rec.model)
    model.load_state_dict(rec.start)
    with torch.no_grad():
        logits = model(x)  # (B, C)
    ce = lambda out, red="mean": nn.functional.cross_entropy(out, y.argmax(1), reduction=red)  # noqa: E731
    bce = lambda out, red="mean": nn.functional.binary_cross_entropy_with_logits(  # noqa: E731
        out, y, reduction=red)
    official, other = (ce, bce) if config.loss == "CE" else (bce, ce)
    mistakes = [
        (f"the loss is {'BCE' if config.loss == 'CE' else 'CE'}, but config.loss is "
         f"{config.loss!r}", other(logits)),
        ("the loss is summed over the batch; the official loss is the batch mean",
         official(logits, "sum")),
        ("the loss is computed on sigmoid(logits); training uses the logits (only the official "
         "validation loss takes the sigmoid)", official(torch.sigmoid(logits))),
    ]
    for message, value in mistakes:
        if math.isclose(got, float(value), rel_tol=1e-5, abs_tol=1e-6):
            return f": it looks like {message}"
    return ""


def _weights_hint(rec: _Recorder, config: FinetuneConfig, got: dict[str, Tensor]) -> str:
    """Name the final model when it is another epoch's, or another average, than the official."""
    ends = rec.epoch_ends

    def average(first: int, last: int) -> dict[str, Tensor]:
        chosen = ends[first - 1: last]
        return {k: sum(e[k].double() for e in chosen) / len(chosen) for k in chosen[0]}

    candidates = [("the last epoch's", ends[-1])]
    if rec.val_ds is not None:
        candidates += [
            ("a weight average; with a validation split the official (src/run.py) reports the "
             "best validation epoch's model", average(config.wa_start, min(config.wa_end,
                                                                           config.epochs))),
            ("a weight average of every epoch; with a validation split the official reports the "
             "best validation epoch's model", average(1, config.epochs)),
        ]
    else:
        candidates.append(("a weight average of every epoch; the official averages epochs "
                           "config.wa_start to config.wa_end", average(1, config.epochs)))
        if not config.wa:
            candidates.append(("a weight average, but config.wa is False",
                               average(config.wa_start, min(config.wa_end, config.epochs))))
    for what, weights in candidates:
        if all(torch.allclose(got[k].double(), weights[k].double(), atol=1e-6) for k in got):
            if what == "the last epoch's":
                if rec.val_ds is not None:
                    return (": they are the last epoch's; with a validation split the official "
                            "keeps the best validation epoch's weights (a state_dict holds the "
                            "live tensors: keep a copy) and loads them at the end")
                return (": they are the last epoch's; with config.wa the official averages the "
                        f"weights of epochs {config.wa_start} to {config.wa_end}")
            return f": they are {what}"
    return ""


def _check_loop_case(finetune_loop: Callable, case: str, config: FinetuneConfig,
                     work: Path) -> int:
    """Run the library and the learner on one case; raise on the first difference. Returns the
    number of optimiser steps."""
    pretrained = _start_weights(config)
    epoch_rng: list[Tensor] = []  # the RNG as each epoch after the first starts

    def at_epoch_end(row: dict) -> None:
        if row["kind"] == "epoch":
            epoch_rng.append(torch.get_rng_state())

    with _quiet():
        library_model, history, _ = finetune(config, pretrained=pretrained,
                                             out_dir=work / "library", callback=at_epoch_end)
    want_losses = [row["loss"] for row in history.where("step")]
    want = _state(library_model)

    # the inputs finetune() builds before its loop, in its order, so the RNG is where it was
    device, env, precision = start_run(config.device, config.precision, config.seed)
    train_ds, val_ds, _ = _datasets(config, work / "yours")
    model = _model(config, train_ds.n_classes, pretrained).to(device)
    model.attention = attention_for(device, precision)
    rec = _Recorder(model, config, train_ds, val_ds, env, device, precision, epoch_rng)
    steps_per_epoch = len(train_ds) // config.batch_size
    hook = register_optimizer_step_pre_hook(rec.on_step)
    try:
        with _quiet():
            got = call_student(finetune_loop, model, config, rec.batches, rec.evaluate, val_ds,
                               case=case)
    finally:
        hook.remove()
    try:
        got_model, losses = got
        losses = [float(v) for v in losses]
        got_state = _state(got_model)
    except (TypeError, ValueError, AttributeError):
        raise ExerciseError(f"on {case} your loop returned {type(got).__name__}; expected "
                            "(model, losses): the final model and one float loss per step") from None
    try:
        if rec.epochs_asked != list(range(1, config.epochs + 1)):
            counted = " (epochs count from 1, as in the official loop)" if rec.epochs_asked == list(
                range(config.epochs)) else ""
            raise ExerciseError(f"your loop asked for batches(epoch) of epochs {rec.epochs_asked}"
                                f"{counted}; expected {list(range(1, config.epochs + 1))}, once "
                                "each, in order")
        if len(rec.steps) != len(want_losses):
            raise ExerciseError(f"your loop made {len(rec.steps)} optimiser steps, expected "
                                f"{len(want_losses)}: one per batch, {steps_per_epoch} batches "
                                f"in each of {config.epochs} epochs")
        if len(losses) != len(want_losses):
            raise ExerciseError(f"your loop returned {len(losses)} losses, expected one per "
                                f"optimiser step ({len(want_losses)})")
        _check_optimiser(rec, config, steps_per_epoch)
        for k, (a, b) in enumerate(zip(losses, want_losses, strict=True)):
            if not abs(a - b) <= 1e-6 * max(1.0, abs(b)):
                hint = _loss_hint(rec, config, a) if k == 0 else (
                    f": the losses agree up to step {k - 1}, so step {k - 1}'s update differs "
                    "from the official one (are the gradients cleared before each backward?)")
                raise ExerciseError(f"the loss of step {k} is {a:.6g}, expected {b:.6g}{hint}")
        if val_ds is not None and rec.validated != list(range(1, config.epochs + 1)):
            raise ExerciseError(
                "with a validation split the official loop validates once after every epoch's "
                f"training; your loop validated after epochs {rec.validated}")
        if set(got_state) != set(want) or not all(
                torch.allclose(got_state[k], want[k], atol=1e-6, rtol=0) for k in want):
            raise ExerciseError("the final weights differ from finetune()'s"
                                + _weights_hint(rec, config, got_state))
    except ExerciseError as error:
        raise ExerciseError(f"on {case}: {error}") from None
    return len(want_losses)


@checker()
def check_finetune_loop(finetune_loop: Callable, hidden: bool = False) -> None:
    """``finetune_loop(model, config, batches, evaluate, val_ds) -> (model, losses)``: the
    official fine-tuning loop, equal to :func:`ssast_teach.finetune.finetune` (losses and final
    weights to 1e-6 in fp32) on the ESC-50, Speech Commands and AudioSet recipes at ci size."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a ci-size model gains nothing from more; a busy machine loses a lot
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cases = _loop_cases(hidden, Path(tmp))
            steps = [_check_loop_case(finetune_loop, case, config, Path(tmp) / f"case{k}")
                     for k, (case, config) in enumerate(cases)]
    finally:
        torch.set_num_threads(threads)
    which = "hidden seeds, head lrs and schedules" if hidden else "seed 0"
    passed(7, 4, f"your loop equals ssast_teach.finetune.finetune (losses and final weights, to "
                 f"1e-6) on the ESC-50, Speech Commands and AudioSet recipes, {steps[0]} steps "
                 f"each, {which}")


# ---------------------------------------------------------------------------- extension


def _pool_cases(hidden: bool) -> list[tuple[str, Tensor, Tensor]]:
    """``(case, tokens (B, N, D), n_real (B,))``: a clip without padding and one with a single
    real token among them; hidden, seeded random batches (float64 too)."""
    g = torch.Generator().manual_seed(731)
    cases = [("3 clips of 8 tokens, 8, 1 and 5 real", torch.randn(3, 8, 4, generator=g),
              torch.tensor([8, 1, 5]))]
    if hidden:
        g = torch.Generator().manual_seed(hidden_seed(732))
        for k, dtype in enumerate((torch.float32, torch.float64)):
            b, n, d = (int(torch.randint(lo, hi, (), generator=g))
                       for lo, hi in ((1, 6), (2, 40), (1, 17)))
            tokens = torch.randn(b, n, d, generator=g, dtype=dtype)
            n_real = torch.randint(1, n + 1, (b,), generator=g)
            cases.append((f"seeded batch {k}: {b} clips of {n} tokens of {d}, {dtype}", tokens,
                          n_real))
    return cases


def _pool_mistakes(tokens: Tensor, n_real: Tensor) -> list[tuple[str, Tensor]]:
    n = tokens.shape[1]
    positions = torch.arange(n)
    real = (positions < n_real[:, None]).unsqueeze(-1)  # (B, N, 1)
    summed = (tokens * real).sum(1)  # (B, D)
    mistakes = [
        ("this is the mean over all N tokens, padding included (the official ft_avgtok): "
         "average only the first n_real tokens of each clip", tokens.mean(1)),
        ("the real tokens were summed, then divided by N: divide by each clip's n_real",
         summed / n),
        ("every clip used the first clip's n_real", tokens[:, : int(n_real[0])].mean(1)),
    ]
    for off in (-1, 1):
        keep = (positions < (n_real[:, None] + off).clamp(1, n)).unsqueeze(-1)  # (B, N, 1)
        mistakes.append((f"the mean covers n_real {off:+d} tokens (an off-by-one in the mask)",
                         (tokens * keep).sum(1) / keep.sum(1)))
    return mistakes


@checker()
def check_real_token_mean(
    real_token_mean: Callable[[Tensor, Tensor], Tensor], hidden: bool = False
) -> None:
    """``real_token_mean(tokens, n_real)``: the properties of a padding-aware mean pooling."""
    cases = _pool_cases(hidden)
    g = torch.Generator().manual_seed(733)
    for case, tokens, n_real in cases:
        b, n, d = tokens.shape
        got = call_student(real_token_mean, tokens.clone(), n_real.clone(), case=case)
        alone = torch.stack([tokens[i, : int(n_real[i])].mean(0) for i in range(b)])  # (B, D)
        atol = 1e-5 if tokens.dtype == torch.float32 else 1e-10
        # the pooled clip equals the mean of the clip without its padding
        check_with_hints("real_token_mean(tokens, n_real)", got, alone,
                         _pool_mistakes(tokens, n_real), case=case, atol=atol)
        real = torch.arange(n)[None, :, None] < n_real[:, None, None]  # (B, N, 1)
        loud = torch.where(real, tokens, 1e3 * torch.randn(tokens.shape, generator=g,
                                                           dtype=tokens.dtype))
        extra = int(torch.randint(1, 9, (), generator=g))
        longer = torch.cat([tokens, 1e3 * torch.randn(b, extra, d, generator=g,
                                                      dtype=tokens.dtype)], 1)  # (B, N + extra, D)
        for what, padded in (("other values in the padding", loud),
                             (f"{extra} more padded tokens", longer)):
            again = call_student(real_token_mean, padded, n_real.clone(), case=f"{case}, {what}")
            try:
                check_tensor("real_token_mean(tokens, n_real)", again, alone, case=f"{case} "
                             f"with {what}", atol=atol, rtol=1e-5)
            except ExerciseError as error:
                raise ExerciseError(f"{error}: the result must not depend on the padding "
                                    "(neither its values nor how much of it there is)") from None
    which = f"{len(cases)} hidden batches" if hidden else "a batch with 0 to 7 padded tokens"
    passed(7, 5, f"your pooling equals each unpadded clip's mean and ignores the padding, its "
                 f"values and its amount, on {which}")
