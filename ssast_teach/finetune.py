"""Chapter 07, finetune: a pretrained SSAST encoder, a new head, a labelled task.

The official ``src/traintest.py`` ``train`` loop, with its recipes as presets
(:meth:`FinetuneConfig.preset`): ESC-50 (patch model, 5 folds), Speech Commands V2 (frame
model) and AudioSet-20K, plus the course's ESC-10 (one held-out fold at classroom scale, all
five at paper scale) and FSDD (takes 0-4 test). Per step: SpecAugment, mixup and noise through
the front end, the model's logits, CE or BCE, Adam with the head's lr times ``head_lr``. Per
epoch: evaluate (accuracy, mAP), keep the best validation epoch's model or add to the weight
average, step MultiStepLR. :func:`finetune`'s loop reads top to bottom in that order, the loop
chapter 07 has the learner write. ``linear_probe=True`` freezes the encoder and trains only
``mlp_head``; ``pretrained=None`` trains the same architecture from random weights.

Official conventions kept: the reported accuracy is the test accuracy of the best validation
epoch where a validation split exists (Speech Commands); without one (ESC-50) the official
picks the best epoch on the test folds themselves, averaged over folds (optimistic, and more
so for a single fold): ``results["best_epoch_on_test"]``. ``results["test"]`` is then the final
epoch. Command line: ``python -m ssast_teach.finetune --help``.

Classroom scale, measured once (seed 0, final epoch; mini model, 10 epochs): from the course's
own classroom pretraining vs from scratch, ESC-10 fold 5 accuracy 0.600 vs 0.550 (mAP 0.693 vs
0.576), FSDD takes 0-4 accuracy 0.570 vs 0.495 (mAP 0.649 vs 0.583).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ssast_teach import code_version
from ssast_teach.audio import FrontEndConfig
from ssast_teach.checkpoints import load_pretrained, save_checkpoint
from ssast_teach.datasets import (
    DataSplit,
    FbankDataset,
    default_cache_dir,
    esc10,
    fsdd,
    load_datafile,
    make_synthetic_dataset,
    prepare_esc50,
    prepare_speechcommands_v2,
    speech_commands_mini,
)
from ssast_teach.model import MODEL_SIZES, SSASTModel, attention_for
from ssast_teach.training import (
    MetricsHistory,
    TrainRun,
    TrainState,
    add_run_arguments,
    autocast,
    cli_errors,
    config_dict,
    config_overrides,
    log,
    shutdown_distributed,
    start_run,
    warmup_lr,
    wrap_ddp,
    write_json,
)

__all__ = [
    "FinetuneConfig",
    "RECIPES",
    "SCALES",
    "accuracy",
    "average_precision",
    "confusion_matrix",
    "finetune",
    "finetune_folds",
    "main",
    "mean_average_precision",
    "param_groups",
    "splits",
    "training_loss",
]

SCALES = ("ci", "classroom", "paper")
RECIPES = ("esc50", "speechcommands", "audioset20k", "esc10", "fsdd", "speech_commands_mini",
           "synthetic")
HEAD = "mlp_head."


@dataclass
class FinetuneConfig:
    """Fine-tuning settings; defaults are the official ESC-50 patch recipe (run_esc_patch.sh)."""

    data: str = "esc50"  # --dataset; one of RECIPES (own data: train_json + label_csv)
    task: str = "ft_avgtok"  # --task ft_avgtok (mean of patch tokens) or ft_cls
    size: str = "base"  # model size when training from scratch (else read from the checkpoint)
    fshape: int = 16  # must equal the checkpoint's patch shape
    tshape: int = 16
    fstride: int = 10  # --fstride 10 (overlap 6); frame model 128
    tstride: int = 10  # --tstride 10; frame model 1
    input_fdim: int = 128
    input_tdim: int = 512  # --target_length 512 (ESC-50); 128 SC; 1024 AudioSet
    norm_stats: str | tuple[float, float] = "esc50"  # --dataset_mean/--dataset_std
    freqm: int = 24  # --freqm 24
    timem: int = 96  # --timem 96
    mixup: float = 0.0  # --mixup 0
    noise: bool = True  # --noise True
    lr: float = 1e-4  # --lr 1e-4
    head_lr: float = 1.0  # --head_lr 1: mlp_head lr = lr * head_lr
    betas: tuple[float, float] = (0.95, 0.999)
    weight_decay: float = 5e-7
    warmup: bool = False  # --warmup False (ESC-50); True for Speech Commands
    warmup_steps: int = 1000  # lr = step / 1000 * lr set every 50 steps (official)
    warmup_every: int = 50
    warmup_quirk: bool = True  # official: lr set every 50 steps (training.warmup_lr)
    lrscheduler_start: int = 6  # MultiStepLR milestones range(start, 1000, step) ...
    lrscheduler_step: int = 1
    lrscheduler_decay: float = 0.85  # ... gamma
    epochs: int = 50  # --n-epochs 50
    batch_size: int = 48  # -b 48
    loss: str = "CE"  # --loss CE (ESC-50) / BCE (SC, AudioSet)
    metrics: str = "acc"  # --metrics acc / mAP (AudioSet): picks the best epoch
    # Official quirk: CE gets argmax(labels.long()): the cast truncates a mixed label's parts
    # to 0, so a mix of two classes trains toward class 0 (no official recipe mixes under CE);
    # False feeds the mixed label distribution to CE.
    ce_target_quirk: bool = True
    # Official quirk: the validation loss is computed on sigmoid(logits) (a reported number
    # only; training is unaffected); False computes it on the logits.
    valid_loss_quirk: bool = True
    wa: bool = False  # --wa: weight-average the models of epochs wa_start..wa_end (AudioSet)
    wa_start: int = 16
    wa_end: int = 30
    linear_probe: bool = False  # not official: frozen encoder, only mlp_head trains
    pos_embed_quirk: bool = True  # model.adapt_pos_embed's official crop (`+ t`, size (8, t))
    test_fold: int = 1  # esc50/esc10: the held-out fold (the official runs 1..5)
    data_root: str | None = None  # esc50/speechcommands: where prepare_* puts the dataset
    train_json: str | None = None  # own data in the official datafile format
    val_json: str | None = None
    eval_json: str | None = None  # a separate test set: picked by best val epoch, then tested
    label_csv: str | None = None
    cache: bool = True
    cache_dir: str | None = None
    seed: int = 0
    precision: str = "auto"
    device: str | None = None
    checkpoint_every: int = 0  # steps; 0: at every epoch end only
    progress: bool = True
    synthetic_per_class: int = 6

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        if self.data not in RECIPES and self.train_json is None:
            raise ValueError(f"data={self.data!r} is not one of {', '.join(RECIPES)} "
                             "(or give train_json and label_csv)")
        if self.task not in ("ft_avgtok", "ft_cls"):
            raise ValueError(f"task={self.task!r} must be ft_avgtok or ft_cls")
        if self.size not in MODEL_SIZES:
            raise ValueError(f"size={self.size!r} is not one of {', '.join(MODEL_SIZES)}")
        if self.loss not in ("CE", "BCE"):
            raise ValueError(f"loss={self.loss!r} must be CE or BCE")
        if self.metrics not in ("acc", "mAP"):
            raise ValueError(f"metrics={self.metrics!r} must be acc or mAP")
        if self.fstride > self.fshape or self.tstride > self.tshape:
            raise ValueError(
                f"strides ({self.fstride}, {self.tstride}) larger than the patch shape "
                f"({self.fshape}, {self.tshape}) would skip input; use stride <= shape"
            )
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError("batch_size and epochs must be at least 1")

    @property
    def pooling(self) -> str:
        return self.task.removeprefix("ft_")

    @classmethod
    def preset(cls, data: str = "esc50", scale: str = "paper", **overrides: object) -> FinetuneConfig:
        """The recipe for ``data`` at ``scale`` (``ci``, ``classroom``, ``paper``), then overrides."""
        if scale not in SCALES:
            raise ValueError(f"scale={scale!r} is not one of {', '.join(SCALES)}")
        if data not in RECIPES:
            raise ValueError(f"data={data!r} is not one of {', '.join(RECIPES)}")
        esc50 = {}  # the dataclass defaults
        sc = dict(fshape=128, tshape=2, fstride=128, tstride=1, input_tdim=128,
                  norm_stats="speechcommands", freqm=48, timem=48, mixup=0.6, noise=True,
                  lr=2.5e-4, epochs=30, batch_size=128, loss="BCE", warmup=True,
                  lrscheduler_start=5)
        # run_as.sh sets warmup=True but passes --warmup False: the run used False.
        as20k = dict(input_tdim=1024, norm_stats="audioset", freqm=48, timem=192, mixup=0.5,
                     noise=False, lr=5e-5, epochs=25, batch_size=12, loss="BCE", metrics="mAP",
                     lrscheduler_start=10, lrscheduler_step=5, lrscheduler_decay=0.5, wa=True,
                     wa_start=6, wa_end=25)
        # Course recipes: the official ESC-50 recipe for ESC-10, Speech Commands' for FSDD.
        paper = {"esc50": esc50, "speechcommands": sc, "audioset20k": as20k,
                 "esc10": esc50, "fsdd": sc, "speech_commands_mini": sc, "synthetic": esc50}
        small = dict(size="mini", epochs=10, batch_size=16, lrscheduler_start=4)
        classroom = {
            "esc10": dict(small, input_tdim=512, fstride=16, tstride=16, lr=5e-4, test_fold=5),
            # Spoken digits last 0.39 s (median; 90% under 0.56 s): read at 0.48 s, not padded
            # to 1.28 s where most patch tokens, hence most of the pooled embedding, would be
            # padding; time masks of at most 12 frames, a quarter of the input.
            "fsdd": dict(small, input_tdim=48, fshape=16, tshape=16, fstride=16, tstride=16,
                         norm_stats="speechcommands", freqm=24, timem=12, mixup=0.0,
                         lr=5e-4, loss="CE", warmup=False),
        }
        # Speech Commands words fill their 1 s clips: 1.28 s inputs.
        classroom["speech_commands_mini"] = dict(classroom["fsdd"], input_tdim=128, timem=24)
        classroom["synthetic"] = classroom["esc10"]
        ci = dict(size="mini", data="synthetic", input_tdim=64, fstride=16, tstride=16,
                  epochs=2, batch_size=4, lr=1e-3, freqm=8, timem=8, lrscheduler_start=1,
                  cache=False, progress=False, synthetic_per_class=3)
        if scale == "paper":
            chosen = {**paper[data], "data": data}
        elif scale == "classroom":
            if data not in classroom:
                raise ValueError(f"no classroom preset for {data!r}: use {sorted(classroom)}")
            chosen = {**paper[data], **classroom[data], "data": data}
        else:
            chosen = {**paper.get(data, {}), **ci}
        return cls(**{**chosen, **overrides})


# ---------------------------------------------------------------- metrics


def accuracy(scores: Tensor, targets: Tensor) -> float:
    """Fraction of clips whose top score is their (top) label: argmax vs argmax, official."""
    return float((scores.argmax(1) == targets.argmax(1)).float().mean())


def average_precision(scores: Tensor, targets: Tensor) -> float:
    """Average precision of one class: ``sum_k (R_k - R_(k-1)) * P_k`` over the distinct scores
    from high to low (tied scores form one threshold), as sklearn's ``average_precision_score``.
    NaN when the class has no positive."""
    scores, targets = scores.double().flatten(), (targets.flatten() > 0.5).double()
    positives = targets.sum()
    if positives == 0:
        return float("nan")
    order = torch.argsort(scores, descending=True, stable=True)
    s, t = scores[order], targets[order]
    tp, fp = t.cumsum(0), (1 - t).cumsum(0)
    last = torch.ones_like(s, dtype=torch.bool)  # last position of each run of tied scores
    last[:-1] = s[1:] != s[:-1]
    precision = tp[last] / (tp[last] + fp[last])
    recall = tp[last] / positives
    gain = torch.diff(recall, prepend=recall.new_zeros(1))
    return float((gain * precision).sum())


def mean_average_precision(scores: Tensor, targets: Tensor) -> float:
    """mAP: the mean over classes (columns) of :func:`average_precision`, classes without a
    positive left out."""
    aps = [average_precision(scores[:, k], targets[:, k]) for k in range(scores.shape[1])]
    return float(np.nanmean(aps)) if not all(np.isnan(aps)) else float("nan")


def confusion_matrix(scores: Tensor, targets: Tensor) -> Tensor:
    """``(C, C)`` counts, rows the true class (argmax of the label), columns the prediction."""
    c = scores.shape[1]
    flat = targets.argmax(1) * c + scores.argmax(1)  # (N,)
    return torch.bincount(flat, minlength=c * c).view(c, c)


# ---------------------------------------------------------------- data


def splits(config: FinetuneConfig, out_dir: str | Path) -> tuple[DataSplit, DataSplit | None, DataSplit]:
    """(train, validation or None, test) clip lists of ``config``: what a run trains and is
    scored on, so a baseline can be scored on the same clips (``out_dir``: where synthetic
    data is written)."""
    out_dir = Path(out_dir)
    c = config
    if c.train_json is not None:
        if c.label_csv is None or c.val_json is None:
            raise ValueError("train_json needs val_json and label_csv (official datafile format)")
        val = load_datafile(c.val_json, c.label_csv)
        if c.eval_json is None:  # official: validation is the test set (ESC-50, AudioSet)
            return load_datafile(c.train_json, c.label_csv), None, val
        return load_datafile(c.train_json, c.label_csv), val, load_datafile(c.eval_json, c.label_csv)
    if c.data == "esc10":
        others = [f for f in range(1, 6) if f != c.test_fold]
        return esc10(others), None, esc10([c.test_fold])
    if c.data == "fsdd":
        return fsdd("train"), None, fsdd("test")
    if c.data == "speech_commands_mini":
        return (speech_commands_mini("train"), speech_commands_mini("validation"),
                speech_commands_mini("test"))
    if c.data == "synthetic":
        every = make_synthetic_dataset(out_dir / "synthetic", n_per_class=c.synthetic_per_class,
                                       seed=c.seed)
        test = every.items[::3]
        train = [it for i, it in enumerate(every.items) if i % 3]
        return (DataSplit("synthetic_train", train, every.labels), None,
                DataSplit("synthetic_test", test, every.labels))
    root = Path(c.data_root) if c.data_root else None
    if root is None:
        raise ValueError(f"data={c.data!r} needs data_root (where to download/prepare it)")
    if c.data == "esc50":
        s = prepare_esc50(root)
        return s[f"esc_train_data_{c.test_fold}"], None, s[f"esc_eval_data_{c.test_fold}"]
    if c.data == "speechcommands":
        s = prepare_speechcommands_v2(root)
        return (s["speechcommand_train_data"], s["speechcommand_valid_data"],
                s["speechcommand_eval_data"])
    raise ValueError("data='audioset20k' needs train_json, val_json and label_csv")


def _datasets(config: FinetuneConfig, out_dir: Path):
    c = config
    front = FrontEndConfig(num_mel_bins=c.input_fdim, target_length=c.input_tdim,
                           norm_stats=c.norm_stats, freqm=c.freqm, timem=c.timem,
                           mixup=c.mixup, noise=c.noise)
    cache_dir = (Path(c.cache_dir) if c.cache_dir else default_cache_dir()) if c.cache else None
    make = lambda split, training: FbankDataset(  # noqa: E731
        split, front, training=training, cache=c.cache, cache_dir=cache_dir)
    train, val, test = splits(config, out_dir)
    return make(train, True), (make(val, False) if val else None), make(test, False)


# ---------------------------------------------------------------- model and optimiser


def _model(
    config: FinetuneConfig, n_classes: int, pretrained: str | Path | Mapping | None
) -> SSASTModel:
    """The classifier, built by :meth:`SSASTModel.for_finetuning` from a pretraining checkpoint
    (path, registry name or state dict), or from scratch: the same architecture from a random
    pretraining model of ``config.size`` at the fine-tuning input size."""
    c = config
    if pretrained is None:
        source = SSASTModel.for_pretraining(c.size, c.fshape, c.tshape, c.input_fdim,
                                            c.input_tdim)
    elif isinstance(pretrained, (str, Path)):  # a file, or a registry name (downloaded)
        source = load_pretrained(pretrained)
    else:
        source = SSASTModel.from_pretrained_state_dict(pretrained)
    p_shape = (source.config.fshape, source.config.tshape)
    if p_shape != (c.fshape, c.tshape):
        raise ValueError(
            f"fine-tuning patch shape fshape={c.fshape}, tshape={c.tshape} differs from the "
            f"checkpoint's {p_shape[0]}x{p_shape[1]}: the patch embedding weights only fit "
            f"their own shape (pass --fshape {p_shape[0]} --tshape {p_shape[1]})"
        )
    return SSASTModel.for_finetuning(
        source, n_classes=n_classes, fstride=c.fstride, tstride=c.tstride,
        input_fdim=c.input_fdim, input_tdim=c.input_tdim, pooling=c.pooling,
        pos_embed_quirk=c.pos_embed_quirk,
    )


def param_groups(model: SSASTModel, config: FinetuneConfig) -> list[dict]:
    """Official split (``src/traintest.py``, ``train``): ``mlp_head.*`` at ``lr * head_lr``,
    everything else at ``lr``; chapter 07's loop builds its Adam from these groups.

    Linear probe: the encoder is frozen (``requires_grad=False``) and only the head group is
    returned.
    """
    head = [p for n, p in model.named_parameters() if n.startswith(HEAD)]
    base = [p for n, p in model.named_parameters() if not n.startswith(HEAD)]
    head_group = {"params": head, "lr": config.lr * config.head_lr}
    if config.linear_probe:
        for p in base:
            p.requires_grad_(False)
        return [head_group]
    return [{"params": base, "lr": config.lr}, head_group]


def training_loss(logits: Tensor, targets: Tensor, config: FinetuneConfig) -> Tensor:
    """The training loss of one batch (official ``src/traintest.py``, ``train``): BCE on the
    logits, or CE on ``argmax(targets.long())``, the official target (``ce_target_quirk``);
    ``ce_target_quirk=False`` gives CE the (possibly mixed) label distribution itself.
    ``logits`` ``(B, C)`` float32, ``targets`` ``(B, C)``; a 0-d tensor."""
    if config.loss == "BCE":
        return nn.functional.binary_cross_entropy_with_logits(logits, targets)
    if not config.ce_target_quirk:
        return nn.functional.cross_entropy(logits, targets)
    # Rounding first keeps a float32 same-class mix (0.99999994) at 1, as the official float64
    # sum is; the cast then truncates as the official .long() does.
    return nn.functional.cross_entropy(logits, targets.double().round(decimals=6).long().argmax(1))


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def predict(model: nn.Module, dataset: FbankDataset, batch_size: int, device: torch.device,
            precision: str) -> tuple[Tensor, Tensor]:
    """``(logits (N, C), targets (N, C))`` over ``dataset`` in order, in eval mode: chapter
    07's per-epoch evaluation scores them with :func:`scores_of`."""
    was_training = model.training
    model.eval()
    outs, targets = [], []
    for x, y in torch.utils.data.DataLoader(dataset, batch_size=batch_size):
        with autocast(precision, device):
            outs.append(model(x.to(device)).float().cpu())
        targets.append(y)
    model.train(was_training)
    return torch.cat(outs), torch.cat(targets)


def scores_of(logits: Tensor, targets: Tensor, config: FinetuneConfig,
              eval_batch: int | None = None) -> dict[str, float]:
    """Accuracy, mAP and the validation loss of one evaluation.

    The loss is official: the mean of the per-batch losses (``np.mean(A_loss)``) over batches of
    ``eval_batch`` clips (default ``2 * batch_size``, the official val loader's), not the mean
    over clips; they differ when the last batch is smaller.
    """
    # official validate(): the loss function is applied to sigmoid(logits)
    out = torch.sigmoid(logits) if config.valid_loss_quirk else logits
    batch = eval_batch or 2 * config.batch_size
    losses = []
    for o, t in zip(out.split(batch), targets.split(batch), strict=True):
        if config.loss == "CE":
            losses.append(float(nn.functional.cross_entropy(o, t.argmax(1))))
        else:
            losses.append(float(nn.functional.binary_cross_entropy_with_logits(o, t)))
    return {"acc": accuracy(logits, targets), "mAP": mean_average_precision(logits, targets),
            "loss": float(np.mean(losses))}


# ---------------------------------------------------------------- the run


def finetune(
    config: FinetuneConfig,
    *,
    pretrained: str | Path | Mapping | None = None,
    out_dir: str | Path,
    resume: str | Path | None = None,
    callback=None,
) -> tuple[SSASTModel, MetricsHistory, dict]:
    """Fine-tune (or linear-probe, or train from scratch when ``pretrained`` is None).

    The loop is the official ``src/traintest.py`` ``train``, the one chapter 07 has the learner
    write: per step, the warm-up lr (when on), the logits, :func:`training_loss`,
    ``zero_grad``/``backward``/``step``; per epoch, the validation and test scores, the best
    validation epoch's weights kept, the weight-average sum, ``MultiStepLR.step()``.
    :class:`~ssast_teach.training.TrainRun` supplies what is around it: data order,
    checkpoints, exact resume, Ctrl-C, progress.

    Returns ``(model, history, results)``: the reported model (official: the best validation
    epoch's where a validation split exists, else the weight average when ``config.wa``, else
    the final epoch's), the history rows (``kind`` "step" and "epoch"), and results:
    ``test`` (acc, mAP, loss of the reported model on the test split), ``selection`` (how that
    model was chosen), ``best_epoch_on_test`` (official ESC-50 convention), ``epochs`` (one row
    per epoch), ``confusion_matrix`` (rows true class), ``class_names``, ``per_clip`` (each test
    clip's ``wav``, ``target`` and ``prediction``, for paired comparisons). Also written to
    ``out_dir``: ``results.json``, ``finetuned.pth``, ``train_state.pt``.
    """
    out_dir = Path(out_dir)
    device, env, precision = start_run(config.device, config.precision, config.seed)
    train_ds, val_ds, test_ds = _datasets(config, out_dir)
    n_classes = train_ds.n_classes
    model = _model(config, n_classes, pretrained).to(device)
    model.attention = attention_for(device, precision)
    groups = param_groups(model, config)
    base_lrs = [g["lr"] for g in groups]
    optimizer = torch.optim.Adam(groups, betas=config.betas, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, list(range(config.lrscheduler_start, 1000, config.lrscheduler_step)),
        gamma=config.lrscheduler_decay,
    )
    ddp_model = wrap_ddp(model, env, device)  # the model itself in one process
    run = TrainRun(
        model=model, optimizer=optimizer, scheduler=scheduler, dataset=train_ds,
        batch_size=config.batch_size, n_epochs=config.epochs, seed=config.seed,
        config=config_dict(config), out_dir=out_dir, checkpoint_every=config.checkpoint_every,
        env=env, progress=config.progress, callback=callback,
    )
    if resume is not None:
        run.resume(resume)
    mode = ("linear probe" if config.linear_probe else "fine-tuning") + (
        " from scratch" if pretrained is None else "")
    log(env, f"{mode}: {config.data}, {n_classes} classes, {len(train_ds)} train / "
        f"{len(val_ds) if val_ds else 0} val / {len(test_ds)} test clips, {config.size if pretrained is None else 'pretrained'} "
        f"{config.fshape}x{config.tshape} stride {config.fstride}x{config.tstride} on "
        f"{config.input_fdim}x{config.input_tdim} ({model.grid.num_patches} patches), "
        f"{config.epochs} epochs, batch {config.batch_size}, {config.loss}, device {device}, "
        f"precision {precision}")
    eval_batch = config.batch_size * 2  # official val loader: batch_size * 2
    key = "mAP" if config.metrics == "mAP" else "acc"

    start = time.perf_counter()
    try:
        for epoch in run.epochs():  # 1, 2, ..., config.epochs
            for x, y in run.batches():  # (B, T, F) augmented, (B, C) labels
                step = run.state.step
                if config.warmup:  # official: set before the step, every warmup_every steps
                    factor = warmup_lr(step, 1.0, config.warmup_steps, config.warmup_every,
                                       warmup_quirk=config.warmup_quirk)
                    if factor is not None:
                        for group, base_lr in zip(optimizer.param_groups, base_lrs, strict=True):
                            group["lr"] = factor * base_lr
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with autocast(precision, device):
                    logits = ddp_model(x)  # (B, n_classes)
                loss = training_loss(logits.float(), y, config)
                run.check_finite(loss)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                run.record_step(loss)
            scores: dict = {}
            for name, ds in (("val", val_ds), ("test", test_ds)):
                if ds is not None:
                    scores |= {f"{name}_{k}": v for k, v in scores_of(
                        *predict(model, ds, eval_batch, device, precision), config).items()}
            extra = run.state.extra
            if val_ds is not None and scores[f"val_{key}"] > extra.get("best_val", -np.inf):
                # official: keep the best validation epoch's model (best_audio_model.pth); here
                # in memory, so every process has it and a resumed run too (it rides in the
                # checkpoint)
                extra |= {"best_val": scores[f"val_{key}"], "best_epoch": epoch,
                          "best_state": {k: v.detach().cpu().clone()
                                         for k, v in model.state_dict().items()}}
            if config.wa and config.wa_start <= epoch <= config.wa_end:
                _accumulate_wa(run.state, model)
            lr = optimizer.param_groups[0]["lr"]  # the lr this epoch trained with
            scheduler.step()  # official: MultiStepLR once per epoch, after validation
            log(env, f"epoch {epoch}: " + ", ".join(
                f"{k} {v:.4f}" for k, v in {**scores, "lr": lr}.items()))
            run.record("epoch", {**scores, "lr": lr})
    finally:
        if env.distributed:
            shutdown_distributed()
    seconds = time.perf_counter() - start
    results = _results(run, config, model, test_ds, val_ds, eval_batch, device, precision)
    results |= {"seconds": seconds, "mode": mode, "device": str(device), "precision": precision}
    if env.is_main:
        write_json(out_dir / "results.json", results)
        save_checkpoint(model, out_dir / "finetuned.pth",
                        extra={"config": config_dict(config), "ssast_teach": code_version()})
    log(env, f"{mode} done in {seconds:.1f} s: test acc {results['test']['acc']:.4f}, "
        f"mAP {results['test']['mAP']:.4f} ({results['selection']})")
    return model, run.history, results


def _accumulate_wa(state: TrainState, model: SSASTModel) -> None:
    """Running sum of the epoch-end weights for weight averaging (official --wa)."""
    sd = {k: v.detach().cpu().double() for k, v in model.state_dict().items()}
    total = state.extra.get("wa_sum")
    state.extra["wa_sum"] = sd if total is None else {k: total[k] + sd[k] for k in sd}
    state.extra["wa_count"] = state.extra.get("wa_count", 0) + 1


def _results(run: TrainRun, config: FinetuneConfig, model: SSASTModel, test_ds, val_ds,
             eval_batch: int, device: torch.device, precision: str) -> dict:
    epochs = run.history.where("epoch")
    key = "mAP" if config.metrics == "mAP" else "acc"
    # official run.py: with --data-eval the reported model is best_audio_model.pth, even with
    # --wa (validate_wa's result only goes to wa_result.csv); the weight average otherwise
    if val_ds is not None and "best_state" in run.state.extra:
        model.load_state_dict(run.state.extra["best_state"])
        selection = f"best validation {key}: epoch {run.state.extra['best_epoch']}"
    elif config.wa and run.state.extra.get("wa_count"):
        total, n = run.state.extra["wa_sum"], run.state.extra["wa_count"]
        ref = model.state_dict()
        model.load_state_dict({k: (total[k] / n).to(ref[k].dtype) for k in total})
        selection = f"weight average of epochs {config.wa_start}-{min(config.wa_end, config.epochs)}"
    else:
        selection = "final epoch (no validation split)"
    logits, targets = predict(model, test_ds, eval_batch, device, precision)
    best_test = max(range(len(epochs)), key=lambda i: epochs[i][f"test_{key}"]) if epochs else 0
    return {
        "test": scores_of(logits, targets, config),
        "selection": selection,
        "best_epoch_on_test": {"epoch": best_test + 1, **{
            k: epochs[best_test][f"test_{k}"] for k in ("acc", "mAP")}} if epochs else None,
        "epochs": [{k: v for k, v in r.items() if k != "kind"} for r in epochs],
        "confusion_matrix": confusion_matrix(logits, targets).tolist(),
        "class_names": [name for _, _, name in test_ds.split.labels],
        # clip by clip, in the test split's order: what a paired test (ssast_teach.stats) reads
        "per_clip": {"wav": [item["wav"] for item in test_ds.split.items],
                     "target": targets.argmax(1).tolist(), "prediction": logits.argmax(1).tolist()},
    }


def finetune_folds(
    config: FinetuneConfig,
    folds: tuple[int, ...] = (1, 2, 3, 4, 5),
    *,
    pretrained: str | Path | Mapping | None = None,
    out_dir: str | Path,
    callback=None,
) -> dict:
    """Cross-validation as the official ESC-50 recipe: one run per held-out fold (in
    ``out_dir/fold{k}``), then the epoch with the best test accuracy AVERAGED over folds
    (get_esc_result.py), and each fold's accuracy at that epoch."""
    out_dir = Path(out_dir)
    per_fold = {}
    for fold in folds:
        _, _, res = finetune(replace(config, test_fold=fold), pretrained=pretrained,
                             out_dir=out_dir / f"fold{fold}", callback=callback)
        per_fold[fold] = res
    key = "mAP" if config.metrics == "mAP" else "acc"
    curves = np.array([[e[f"test_{key}"] for e in r["epochs"]] for r in per_fold.values()])
    best = int(curves.mean(0).argmax())
    summary = {
        "folds": list(folds),
        "best_epoch": best + 1,
        f"fold_{key}": [float(v) for v in curves[:, best]],
        f"mean_{key}": float(curves[:, best].mean()),
        f"mean_final_{key}": float(np.mean([r["test"][key] for r in per_fold.values()])),
        "per_fold": {str(k): v for k, v in per_fold.items()},
    }
    if int(os.environ.get("RANK", "0")) == 0:
        write_json(out_dir / "results.json", summary)
    return summary


# ---------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ssast_teach.finetune",
        description="Fine-tune SSAST on a labelled task. --data and --scale pick a recipe; every "
        "other option overrides it. [official: X] is the official ESC-50 patch recipe "
        "(run_esc_patch.sh) unless said otherwise.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  python -m ssast_teach.finetune --data esc10 --scale classroom "
        "--pretrained runs/pre/pretrained.pth --out runs/esc10\n"
        "  python -m ssast_teach.finetune --data fsdd --scale classroom --out runs/fsdd-scratch\n",
    )
    a = p.add_argument
    a("--data", default="esc10", choices=RECIPES, help="task and recipe: esc50 / speechcommands "
      "/ audioset20k (official), esc10 / fsdd / speech_commands_mini (course), synthetic (ci) "
      "[default: esc10]")
    a("--scale", default="classroom", choices=SCALES, help="ci (seconds), classroom (minutes on "
      "a 2-core CPU), paper (the official recipe) [default: classroom]")
    add_run_arguments(p, FinetuneConfig)
    a("--pretrained", help="pretraining checkpoint: a path or a registry name such as "
      "SSAST-Base-Patch-400; omit to train from scratch")
    a("--linear-probe", action="store_true", help="freeze the encoder, train only mlp_head "
      "[official: full fine-tuning]")
    a("--folds", type=int, nargs="+", help="ESC: run these held-out folds and average "
      "[official: 1 2 3 4 5]")
    a("--test-fold", type=int, help="ESC: the one held-out fold [classroom: 5]")
    a("--task", choices=["ft_avgtok", "ft_cls"], help="pooling [official: ft_avgtok]")
    a("--size", choices=list(MODEL_SIZES), help="from scratch only: model size [official: base]")
    a("--fshape", type=int, help="patch height, must match the checkpoint [official: 16; frame 128]")
    a("--tshape", type=int, help="patch width, must match the checkpoint [official: 16; frame 2]")
    a("--fstride", type=int, help="[official: 10 patch, 128 frame]")
    a("--tstride", type=int, help="[official: 10 patch, 1 frame]")
    a("--input-tdim", "--target-length", dest="input_tdim", type=int,
      help="input frames [official: 512 ESC-50, 128 SC, 1024 AudioSet]")
    a("--epochs", type=int, help="[official: 50 ESC-50, 30 SC, 25 AudioSet]")
    a("--batch-size", type=int, help="global batch [official: 48 ESC-50, 128 SC, 12 AudioSet]")
    a("--lr", type=float, help="[official: 1e-4 ESC-50, 2.5e-4 SC, 5e-5 AudioSet]")
    a("--head-lr", type=float, help="mlp_head lr = lr x this [official: 1]")
    a("--freqm", type=int, help="SpecAugment frequency mask [official: 24 ESC-50, 48 SC/AS]")
    a("--timem", type=int, help="SpecAugment time mask [official: 96 ESC-50, 48 SC, 192 AS]")
    a("--mixup", type=float, help="mixup probability [official: 0 ESC-50, 0.6 SC, 0.5 AS]")
    a("--noise", type=_bool, help="noise + time roll true/false [official: true ESC-50/SC]")
    a("--loss", choices=["CE", "BCE"], help="[official: CE ESC-50, BCE SC/AudioSet]")
    a("--warmup", type=_bool, help="true/false: lr from 0 over 1000 steps [official: false "
      "ESC-50/AS, true SC]")
    a("--lrscheduler-start", type=int, help="first MultiStepLR milestone epoch [official: 6]")
    a("--lrscheduler-step", type=int, help="epochs between milestones [official: 1]")
    a("--lrscheduler-decay", type=float, help="MultiStepLR gamma [official: 0.85]")
    a("--data-root", help="esc50/speechcommands: folder to download and prepare the dataset in")
    a("--train-json", help="own data: official datafile JSON")
    a("--val-json", help="own data: validation datafile (the test set if no --eval-json)")
    a("--eval-json", help="own data: a separate test datafile (model picked on --val-json)")
    a("--label-csv", help="own data: label CSV (index,mid,display_name)")
    return p


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    overrides = config_overrides(args, FinetuneConfig)
    overrides.pop("data", None)
    if args.linear_probe:
        overrides["linear_probe"] = True
    return FinetuneConfig.preset(args.data, args.scale, **overrides)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with cli_errors():
        config = config_from_args(args)
        if args.folds:
            finetune_folds(config, tuple(args.folds), pretrained=args.pretrained,
                           out_dir=args.out)
        else:
            finetune(config, pretrained=args.pretrained, out_dir=args.out, resume=args.resume)


if __name__ == "__main__":
    main()
