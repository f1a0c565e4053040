"""Chapter 06, pretrain: self-supervised pretraining, the official recipe at three scales.

One step (``task="pretrain_joint"``, the official ``src/traintest_mask.py``, ``trainmask``):
draw two independent masks per clip, run the encoder twice, ``loss = nce(mask 1) + 10 *
mse(mask 2)``, Adam. The pieces around it are the official ones too: the step-wise warm-up,
ReduceLROnPlateau on the masked-patch accuracy of a held-out set every ``epoch_iter`` steps.
:func:`pretrain`'s loop reads top to bottom in that order, the loop chapter 06 has the learner
write. Scales (:meth:`PretrainConfig.preset`):

- ``ci``: the mini model on 16 synthetic clips, 128x64 input, seconds;
- ``classroom``: the mini model on the course's audio+speech mix (ESC-10 folds 1-4, FSDD
  train takes, Speech Commands train: 2261 clips + 64 for validation), the short speech clips
  packed end to end into 128x128 inputs (866 inputs), 50 of 64 patches masked, 2820 steps
  (about 0.1 s each on a 2-core CPU, after the clips are decoded once into the fbank cache);
- ``paper``: the official base patch recipe (AudioSet+LibriSpeech datafiles, GPUs).

``single_pass=True`` is a cheaper variant, not the official one: one mask, one encoder pass,
both heads read the same masked outputs. It halves the encoder work per step: a classroom
step (mini, 128x128, batch 24, 2 threads) took 0.31 s two-pass vs 0.14 s single-pass (best
of 10 on a shared 2-core CPU). The price: both objectives see the same masked patches, which
the official code avoids by drawing a second mask.

Masks come from a generator seeded by ``(seed, step)`` and are drawn for the whole global
batch, so a resumed run and every process of ``torchrun`` see the same masks per clip.
Command line: ``python -m ssast_teach.pretrain --help``.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from ssast_teach import code_version, shown_path
from ssast_teach.audio import FrontEndConfig
from ssast_teach.datasets import (
    DataSplit,
    FbankDataset,
    PackedFbankDataset,
    default_cache_dir,
    load_datafile,
    make_synthetic_dataset,
    pretraining_mix,
)
from ssast_teach.losses import MSE_WEIGHT, info_nce_loss, mse_loss
from ssast_teach.masking import cluster_mask, frame_mask
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
    step_generator,
    warmup_lr,
    wrap_ddp,
    write_json,
)

__all__ = [
    "PRETRAIN_TASKS",
    "PretrainConfig",
    "PretrainObjective",
    "SCALES",
    "draw_masks",
    "main",
    "pretrain",
    "steps_per_epoch",
]

PRETRAIN_TASKS = ("pretrain_joint", "pretrain_mpc", "pretrain_mpg")
SCALES = ("ci", "classroom", "paper")
DATA_SOURCES = {"audio": "audio", "speech": "speech", "both": "audio+speech"}
_EVAL_SALT = 10_000  # validation masks: one fixed draw, the same at every evaluation


def official_lr(size: str) -> float:
    """The official pretraining lr: 5e-4 for tiny (batch 120), 1e-4 otherwise (batch 24)."""
    return 5e-4 if size == "tiny" else 1e-4


@dataclass
class PretrainConfig:
    """Pretraining settings; defaults are the official base patch recipe (run_mask_patch.sh)."""

    task: str = "pretrain_joint"  # --task; or pretrain_mpc / pretrain_mpg (the ablations)
    size: str = "base"  # --model_size base (tiny/small/base_nokd; mini is the course's own)
    fshape: int = 16  # --fshape 16 (frame model: 128)
    tshape: int = 16  # --tshape 16 (frame model: 2)
    fstride: int | None = None  # must equal fshape at pretraining (None: = fshape)
    tstride: int | None = None  # must equal tshape at pretraining (None: = tshape)
    input_fdim: int = 128  # --num_mel_bins 128
    input_tdim: int = 1024  # --target_length 1024
    mask_patch: int = 400  # --mask_patch 400 (the ablation also uses 100 and 250)
    # Official quirk: validation always masks 400 patches whatever --mask_patch is
    # (validatemask); None masks mask_patch instead.
    eval_mask_patch: int | None = 400
    cluster: bool | None = None  # None: official rule, cluster masks when fshape != input_fdim
    single_pass: bool = False  # official: False (two passes, two masks per step)
    mse_weight: float = MSE_WEIGHT  # loss = nce + 10 * mse
    softmax_quirk: bool = True  # official softmax dimension (losses.info_nce_loss)
    lr: float | None = None  # --lr; None: 1e-4, 5e-4 for tiny (official scripts)
    betas: tuple[float, float] = (0.95, 0.999)
    weight_decay: float = 5e-7
    warmup: bool = True  # official: always on in pretraining
    warmup_steps: int = 1000  # lr = step / 1000 * lr ...
    warmup_every: int = 50  # ... set at every 50th step (official)
    warmup_quirk: bool = True  # official: lr set every 50 steps (training.warmup_lr)
    lr_patience: int = 2  # --lr_patience 2: ReduceLROnPlateau(mode="max", factor=0.5)
    lr_factor: float = 0.5
    epoch_iter: int | None = 4000  # --epoch_iter 4000 (800 tiny); None: once per epoch
    batch_size: int = 24  # -b 24 (120 tiny); the global batch under torchrun
    epochs: int = 10  # --n-epochs 10
    max_steps: int | None = None  # not official: stop after this many steps (mid-epoch)
    data: str = "both"  # course mix: audio (ESC-10), speech (FSDD + Speech Commands), both
    esc10_folds: tuple[int, ...] = (1, 2, 3, 4)  # fold 5 stays unseen for chapter 07's test
    train_json: str | None = None  # own data: an official datafile (+ label_csv)
    val_json: str | None = None
    label_csv: str | None = None
    val_clips: int = 64  # course mix: clips held out of the mix for validation
    # Not official: pack clips shorter than the input end to end (datasets.PackedFbankDataset),
    # so the course's 0.4 s digits are not 70% padding; the official pads each clip.
    pack_clips: bool = False
    norm_stats: str | tuple[float, float] = "audioset"  # AudioSet+LibriSpeech mean/std
    cache: bool = True  # keep raw fbanks (memory + data/cache/fbank): later epochs skip decoding
    cache_dir: str | None = None
    seed: int = 0
    precision: str = "auto"  # auto: bf16 where the hardware has it, else fp32
    device: str | None = None  # None: CUDA when present
    checkpoint_every: int = 500  # steps; also at every evaluation and epoch end
    num_workers: int = 0  # 0 keeps resume exact (augmentation-free here, but fbank decoding)
    progress: bool = True
    synthetic_per_class: int = 4  # data="synthetic": clips per kind (4 kinds)
    extra: dict = field(default_factory=dict)  # free notes saved with the run

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        self.esc10_folds = tuple(self.esc10_folds)
        self.fstride = self.fshape if self.fstride is None else self.fstride
        self.tstride = self.tshape if self.tstride is None else self.tstride
        if self.task not in PRETRAIN_TASKS:
            raise ValueError(f"task={self.task!r} is not one of {', '.join(PRETRAIN_TASKS)}")
        if self.size not in MODEL_SIZES:
            raise ValueError(f"size={self.size!r} is not one of {', '.join(MODEL_SIZES)}")
        if (self.fstride, self.tstride) != (self.fshape, self.tshape):
            raise ValueError(
                f"fstride={self.fstride}, tstride={self.tstride} must equal fshape={self.fshape}, "
                f"tshape={self.tshape} at pretraining: overlapping patches would let the model "
                "read a masked patch from its neighbours (the official run.py forces it too)"
            )
        if self.data not in (*DATA_SOURCES, "synthetic") and self.train_json is None:
            raise ValueError(
                f"data={self.data!r} is not one of audio, speech, both, synthetic "
                "(or give train_json)"
            )
        if self.single_pass and self.task != "pretrain_joint":
            raise ValueError("single_pass only changes pretrain_joint; use it with that task")
        n = self.num_patches
        for name in ("mask_patch", "eval_mask_patch"):
            m = getattr(self, name)
            if m is not None and not 1 <= m < n:
                raise ValueError(
                    f"{name}={m} does not fit the patch grid: {self.input_fdim}x{self.input_tdim} "
                    f"input in {self.fshape}x{self.tshape} patches has {n} patches, so it must "
                    f"be in [1, {n - 1}] (the official ratio 400/512 gives {scaled_mask_patch(n)})"
                )
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError("batch_size and epochs must be at least 1")

    @property
    def num_patches(self) -> int:
        f_dim = (self.input_fdim - self.fshape) // self.fshape + 1
        t_dim = (self.input_tdim - self.tshape) // self.tshape + 1
        return f_dim * t_dim

    @property
    def base_lr(self) -> float:
        return official_lr(self.size) if self.lr is None else self.lr

    @property
    def use_cluster(self) -> bool:
        return self.fshape != self.input_fdim if self.cluster is None else self.cluster

    @classmethod
    def preset(cls, scale: str, **overrides: object) -> PretrainConfig:
        """The settings of one scale (``ci``, ``classroom``, ``paper``), then ``overrides``."""
        presets: dict[str, dict] = {
            "ci": dict(
                size="mini", input_tdim=64, mask_patch=24, eval_mask_patch=None, data="synthetic",
                batch_size=4, epochs=2, lr=5e-4, warmup_steps=4, warmup_every=1, epoch_iter=None,
                val_clips=4, checkpoint_every=0, cache=False, progress=False,
            ),
            # 128 frames with speech clips packed end to end (PackedFbankDataset: the digits
            # last 0.4 s); 2820 steps, 10x the first course version's 282: the largest budget
            # of the scale study (ssast_teach.study) that keeps chapter 06 under 8 minutes on a
            # 2-core CPU. The plateau rule looks every 282 steps, not every 36-step epoch.
            "classroom": dict(
                size="mini", input_tdim=128, mask_patch=50, eval_mask_patch=None, data="both",
                batch_size=24, epochs=79, max_steps=2820, lr=5e-4, warmup_steps=100,
                warmup_every=10, epoch_iter=282, val_clips=64, pack_clips=True,
            ),
            "paper": {},
        }
        if scale not in presets:
            raise ValueError(f"scale={scale!r} is not one of {', '.join(SCALES)}")
        return cls(**{**presets[scale], **overrides})


def scaled_mask_patch(num_patches: int) -> int:
    """The official masking ratio (400 of 512 patches) on a grid of ``num_patches``."""
    return max(1, min(num_patches - 1, round(num_patches * 400 / 512)))


# ---------------------------------------------------------------- data


def _splits(config: PretrainConfig, out_dir: Path) -> tuple[DataSplit, DataSplit]:
    """(train, validation) clip lists for ``config``."""
    if config.train_json is not None:
        if config.label_csv is None or config.val_json is None:
            raise ValueError("train_json needs val_json and label_csv (official datafile format)")
        return (
            load_datafile(config.train_json, config.label_csv),
            load_datafile(config.val_json, config.label_csv),
        )
    if config.data == "synthetic":
        mix = make_synthetic_dataset(
            out_dir / "synthetic", n_per_class=config.synthetic_per_class, seed=config.seed
        )
    else:
        mix = pretraining_mix(DATA_SOURCES[config.data], esc10_folds=config.esc10_folds,
                              seed=config.seed)
    if not 0 < config.val_clips < len(mix):
        raise ValueError(f"val_clips={config.val_clips} must be in [1, {len(mix) - 1}]")
    # The mix is already shuffled per source; every k-th clip keeps both sources in validation.
    k = len(mix) // config.val_clips
    val_ids = set(range(0, k * config.val_clips, k))
    train = [it for i, it in enumerate(mix.items) if i not in val_ids]
    val = [it for i, it in enumerate(mix.items) if i in val_ids]
    return DataSplit(f"{mix.name}_train", train, mix.labels), DataSplit(
        f"{mix.name}_val", val, mix.labels
    )


def _datasets(config: PretrainConfig, out_dir: Path) -> tuple[FbankDataset, FbankDataset]:
    front = FrontEndConfig(
        num_mel_bins=config.input_fdim, target_length=config.input_tdim,
        norm_stats=config.norm_stats,
    )  # pretraining: no SpecAugment, no mixup, no noise (official)
    cache_dir = None
    if config.cache:
        cache_dir = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    train, val = _splits(config, out_dir)
    kind = PackedFbankDataset if config.pack_clips else FbankDataset
    make = lambda split: kind(split, front, cache=config.cache, cache_dir=cache_dir)  # noqa: E731
    return make(train), make(val)


def steps_per_epoch(config: PretrainConfig, out_dir: str | Path = ".") -> int:
    """Optimiser steps in one epoch of ``config``'s training data (after packing, when on)."""
    train, _ = _datasets(config, Path(out_dir))
    return len(train) // config.batch_size


# ---------------------------------------------------------------- masks and objective


def draw_masks(
    config: PretrainConfig, t_dim: int, batch: int, generator: torch.Generator, mask_patch: int
) -> Tensor:
    """``(batch, mask_patch)`` ids: cluster masks for patch models, frame masks otherwise
    (chapter 03 builds both; chapter 06's loop draws two per step)."""
    draw = cluster_mask if config.use_cluster else frame_mask
    return draw(batch, config.num_patches, mask_patch, t_dim, generator)


class PretrainObjective(nn.Module):
    """The loss of one step as a module, so that DistributedDataParallel sees one ``forward``.

    ``forward(x, mpc_mask, mpg_mask)`` returns ``{"loss", "acc", "nce", "mse"}`` (absent ones
    omitted). Joint, official (``src/traintest_mask.py``, ``trainmask``): mpc on ``mpc_mask``,
    mpg on ``mpg_mask``, two encoder passes, ``loss = nce + mse_weight * mse``. The ablations
    ``pretrain_mpc`` / ``pretrain_mpg`` and ``single_pass`` make one pass, over ``mpc_mask``
    (the step's first draw).
    """

    def __init__(self, model: SSASTModel, config: PretrainConfig) -> None:
        super().__init__()
        self.model, self.config = model, config

    def forward(
        self, x: Tensor, mpc_mask: Tensor, mpg_mask: Tensor | None = None
    ) -> dict[str, Tensor]:
        c, m = self.config, self.model
        if c.task == "pretrain_mpc":
            acc, nce = m.mpc(x, mpc_mask, softmax_quirk=c.softmax_quirk)
            return {"loss": nce, "acc": acc, "nce": nce}
        if c.task == "pretrain_mpg":
            mse = m.mpg(x, mpc_mask)
            return {"loss": mse, "mse": mse}
        if c.single_pass:
            h, target = m.masked_outputs(x, mpc_mask)  # (B, M, D), (B, M, P)
            acc, nce = info_nce_loss(m.cpredlayer(h), target, softmax_quirk=c.softmax_quirk)
            mse = mse_loss(m.gpredlayer(h), target)
        else:
            acc, nce = m.mpc(x, mpc_mask, softmax_quirk=c.softmax_quirk)
            mse = m.mpg(x, mpg_mask)
        return {"loss": nce + c.mse_weight * mse, "acc": acc, "nce": nce, "mse": mse}


@torch.no_grad()
def evaluate(
    objective: PretrainObjective, dataset: FbankDataset, config: PretrainConfig,
    device: torch.device, precision: str,
) -> dict[str, float]:
    """Mean masked-patch accuracy / nce / mse over ``dataset`` with fixed masks (the official
    ``src/traintest_mask.py`` ``validatemask``), as ``val_acc``, ``val_nce``, ``val_mse``: what
    chapter 06's loop evaluates every ``epoch_iter`` steps and steps the plateau scheduler on."""
    model = objective.model
    was_training = model.training
    model.eval()
    m = config.eval_mask_patch or config.mask_patch
    totals: dict[str, float] = {}
    n = 0
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size)
    for i, (x, _) in enumerate(loader):
        generator = step_generator(config.seed, i, _EVAL_SALT)
        mpc_mask = draw_masks(config, model.grid.t_dim, len(x), generator, m)
        mpg_mask = draw_masks(config, model.grid.t_dim, len(x), generator, m)
        with autocast(precision, device):
            out = objective(x.to(device), mpc_mask, mpg_mask)
        for key, value in out.items():
            totals[key] = totals.get(key, 0.0) + float(value) * len(x)
        n += len(x)
    model.train(was_training)
    return {f"val_{k}": v / n for k, v in totals.items() if k != "loss"}


# ---------------------------------------------------------------- the run


def pretrain(
    config: PretrainConfig,
    *,
    out_dir: str | Path,
    resume: str | Path | None = None,
    callback=None,
) -> tuple[SSASTModel, MetricsHistory]:
    """Pretrain a model as ``config`` says; checkpoints and the final model go to ``out_dir``.

    The loop is the official ``src/traintest_mask.py`` ``trainmask``, the one chapter 06 has the
    learner write: per step, the warm-up lr, two masks from the step's generator, the joint
    loss, ``zero_grad``/``backward``/``step``; every ``epoch_iter`` steps (once per epoch when
    None), the evaluation and ReduceLROnPlateau stepped on the masked-patch accuracy.
    :class:`~ssast_teach.training.TrainRun` supplies what is around it: data order,
    checkpoints, exact resume, Ctrl-C, progress.

    ``resume``: a run directory or ``train_state.pt`` to continue exactly. ``callback(row)`` is
    called with every history row (``kind`` "step", or "eval" for each evaluation); raising
    ``KeyboardInterrupt`` from it stops the run after a checkpoint. Returns
    ``(model, history)``; the model is also saved as ``out_dir/pretrained.pth`` (ssast_teach
    checkpoint format).
    """
    out_dir = Path(out_dir)
    device, env, precision = start_run(config.device, config.precision, config.seed)
    train_ds, val_ds = _datasets(config, out_dir)
    model = SSASTModel.for_pretraining(
        config.size, config.fshape, config.tshape, config.input_fdim, config.input_tdim
    ).to(device)
    model.attention = attention_for(device, precision)
    objective = PretrainObjective(model, config)
    ddp_objective = wrap_ddp(objective, env, device)  # the objective itself in one process
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(
        trainable, config.base_lr, betas=config.betas, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=config.lr_factor, patience=config.lr_patience
    )
    run = TrainRun(
        model=model, optimizer=optimizer, scheduler=scheduler, dataset=train_ds,
        batch_size=config.batch_size, n_epochs=config.epochs, seed=config.seed,
        config=config_dict(config), out_dir=out_dir, checkpoint_every=config.checkpoint_every,
        env=env, progress=config.progress, max_steps=config.max_steps, callback=callback,
    )
    if resume is not None:
        run.resume(resume)
    steps_per_epoch = len(train_ds) // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(
            f"batch_size={config.batch_size} is larger than the {len(train_ds)} training clips"
        )
    log(
        env,
        f"pretraining {config.task} ({'one pass' if config.single_pass else 'official'}): "
        f"{config.size} {config.fshape}x{config.tshape} on {config.input_fdim}x{config.input_tdim}"
        f" ({model.grid.num_patches} patches, mask {config.mask_patch}, "
        f"{'cluster' if config.use_cluster else 'frame'} masks), {len(train_ds)} train / "
        f"{len(val_ds)} val clips, {steps_per_epoch} steps x {config.epochs} epochs, batch "
        f"{config.batch_size} over {env.world_size} process(es), device {device}, "
        f"precision {precision}",
    )
    t_dim, mask_patch = model.grid.t_dim, config.mask_patch
    eval_every = config.epoch_iter or steps_per_epoch  # None: at each epoch's last step

    start = time.perf_counter()
    try:
        for _epoch in run.epochs():  # nothing happens per epoch: evaluations go by steps
            for x, _ in run.batches():  # (B, T, F), this process's share of the global batch
                step = run.state.step
                if config.warmup:  # official: set before the step, every warmup_every steps
                    lr = warmup_lr(step, config.base_lr, config.warmup_steps,
                                   config.warmup_every, warmup_quirk=config.warmup_quirk)
                    if lr is not None:
                        for group in optimizer.param_groups:
                            group["lr"] = lr
                # Masks for the global batch B from the step's own generator (the same in a
                # resumed run and in every process), then this process's clips of it, dealt
                # round-robin as the sampler deals them (all of them in one process).
                generator = step_generator(config.seed, step)
                mpc_mask = draw_masks(config, t_dim, config.batch_size, generator, mask_patch)
                mpg_mask = draw_masks(config, t_dim, config.batch_size, generator, mask_patch)
                mpc_mask = mpc_mask[env.rank :: env.world_size]  # (B / world_size, M)
                mpg_mask = mpg_mask[env.rank :: env.world_size]  # (B / world_size, M)
                with autocast(precision, device):
                    out = ddp_objective(x.to(device, non_blocking=True), mpc_mask, mpg_mask)
                loss = out["loss"]  # joint: nce(mpc_mask) + mse_weight * mse(mpg_mask)
                run.check_finite(loss)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                run.record_step(loss, {k: float(v.detach()) for k, v in out.items() if k != "loss"})
                if run.state.step % eval_every == 0:
                    metrics = evaluate(objective, val_ds, config, device, precision)
                    # official: the plateau scheduler follows the masked accuracy (-mse for mpg)
                    if config.task == "pretrain_mpg":
                        scheduler.step(-metrics["val_mse"])
                    else:
                        scheduler.step(metrics["val_acc"])
                    log(env, f"step {run.state.step}: "
                        + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
                    run.record("eval", {**metrics, "lr": optimizer.param_groups[0]["lr"]})
    finally:
        if env.distributed:
            shutdown_distributed()
    seconds = time.perf_counter() - start
    if env.is_main:
        _save_final(model, out_dir / "pretrained.pth", config, run.state, seconds)
    log(env, f"pretraining done in {seconds:.1f} s: {shown_path(out_dir / 'pretrained.pth')}")
    return model, run.history


def _save_final(model: SSASTModel, path: Path, config, state: TrainState, seconds: float) -> None:
    from ssast_teach.checkpoints import save_checkpoint

    extra = {"config": config_dict(config), "step": state.step, "epoch": state.epoch,
             "seconds_this_process": seconds, "ssast_teach": code_version()}
    save_checkpoint(model, path, extra=extra)


# ---------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ssast_teach.pretrain",
        description="SSAST self-supervised pretraining. --scale picks a preset; every other "
        "option overrides it. [official: X] is the official recipe's value (run_mask_patch.sh).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  python -m ssast_teach.pretrain --scale classroom --out runs/pre\n"
        "  torchrun --nproc_per_node=2 -m ssast_teach.pretrain --scale ci --out runs/ci\n",
    )
    a = p.add_argument
    a("--scale", default="classroom", choices=SCALES, help="preset: ci (seconds), classroom "
      "(minutes on a 2-core CPU), paper (the official recipe) [default: classroom]")
    add_run_arguments(p, PretrainConfig)
    a("--task", choices=PRETRAIN_TASKS, help="objective [official: pretrain_joint]")
    a("--single-pass", action="store_true", help="joint with one mask and one encoder pass "
      "[official: two passes, two masks]")
    a("--size", choices=list(MODEL_SIZES), help="model size [official: base; tiny uses lr 5e-4]")
    a("--fshape", type=int, help="patch height in mel bins [official: 16; frame model 128]")
    a("--tshape", type=int, help="patch width in frames [official: 16; frame model 2]")
    a("--fstride", type=int, help="must equal --fshape at pretraining [official: = fshape]")
    a("--tstride", type=int, help="must equal --tshape at pretraining [official: = tshape]")
    a("--input-tdim", "--target-length", dest="input_tdim", type=int,
      help="input frames (10 ms each) [official: 1024]")
    a("--mask-patch", type=int, help="patches masked per clip [official: 400 of 512]")
    a("--eval-mask-patch", type=int, help="patches masked at validation [official: 400 "
      "always; classroom: = --mask-patch]")
    a("--data", choices=[*DATA_SOURCES, "synthetic"], help="course data: audio (ESC-10), speech "
      "(FSDD + Speech Commands) or both [official: AudioSet + LibriSpeech]")
    a("--train-json", help="own data: official datafile JSON ({'data': [{'wav', 'labels'}]})")
    a("--val-json", help="own data: validation datafile JSON")
    a("--label-csv", help="own data: label CSV (index,mid,display_name)")
    a("--epochs", type=int, help="[official: 10]")
    a("--batch-size", type=int, help="global batch, split over processes [official: 24; tiny 120]")
    a("--lr", type=float, help="peak lr of Adam(betas 0.95, 0.999; wd 5e-7) [official: 1e-4; "
      "tiny 5e-4]")
    a("--warmup-steps", type=int, help="linear warm-up length [official: 1000, lr set every 50]")
    a("--epoch-iter", type=int, help="evaluate + ReduceLROnPlateau(max, 0.5, patience 2) every "
      "this many steps; 0 = once per epoch [official: 4000; tiny 800]")
    a("--max-steps", type=int, help="stop after this many steps [official: none; classroom 2820]")
    a("--pack-clips", action=argparse.BooleanOptionalAction, help="pack clips shorter than the "
      "input end to end [official: no; classroom: yes]")
    a("--checkpoint-every", type=int, help="steps between checkpoints [default: 500]")
    return p


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    overrides = config_overrides(args, PretrainConfig)
    if args.single_pass:
        overrides["single_pass"] = True
    if args.epoch_iter == 0:
        overrides["epoch_iter"] = None
    return PretrainConfig.preset(args.scale, **overrides)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with cli_errors():
        config = config_from_args(args)
        out = Path(args.out)
        _, history = pretrain(config, out_dir=out, resume=args.resume)
        if int(os.environ.get("RANK", "0")) == 0:
            write_json(out / "history.json", history.rows)


if __name__ == "__main__":
    main()
