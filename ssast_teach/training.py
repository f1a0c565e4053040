"""What every training run needs, whatever it trains (shared by chapters 06 and 07).

Chapter 06 (pretrain) and chapter 07 (finetune) differ only in what one step computes and when
they evaluate. Everything else lives here, once:

- where and how to compute: :func:`start_run` (:func:`select_device`, the ``torchrun`` process
  group, :func:`resolve_precision`: ``"auto"`` is bf16 autocast on CUDA with bf16 and on CPUs
  with AVX512-BF16 or AMX, else fp32; :func:`seed_all`), the same for both trainers;
- the command line both trainers share: :func:`add_run_arguments` (``--out``, ``--resume``,
  ``--seed``, ``--precision``, ``--device``, ``--no-progress``, ``--correct QUIRK``) and
  :func:`config_overrides`;
- the data order: :func:`epoch_batches`, a ``DistributedSampler`` seeded by ``seed + epoch``
  (also with one process), cut into global batches, so a run resumed mid-epoch skips exactly
  the batches it already consumed, and two processes see the same global batches as one;
- a run that survives: :class:`TrainState` + :func:`save_train_checkpoint` (atomic; model,
  optimiser, scheduler, counters, every RNG state, the metrics history, the config; tensors and
  plain Python values only), :func:`load_train_checkpoint` (``torch.load(weights_only=True)``:
  a run directory someone hands you cannot run code, :class:`TrainStateError` refuses it);
  Ctrl-C lets the step in progress finish and saves before it stops; a non-finite loss raises
  :class:`NonFiniteLossError` and never overwrites the last good checkpoint;
- what happened: :class:`MetricsHistory`, one dict per row, that a notebook plots live through
  a ``callback(row)``;
- around the loop: :class:`TrainRun`, which the trainers' loops iterate over
  (``run.epochs()``, ``run.batches()``) and report to (``run.record_step``, ``run.record``):
  the loops themselves are plain code in :mod:`ssast_teach.pretrain` and
  :mod:`ssast_teach.finetune`, in the order of the loops the learner writes;
- several processes: :func:`init_distributed` reads the ``torchrun`` environment (gloo on CPU,
  nccl on CUDA); :func:`wrap_ddp`; only rank 0 logs (``logging``, logger ``ssast_teach``) and
  writes.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import random
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from ssast_teach.checkpoints import CheckpointError
from ssast_teach.download import DownloadError, atomic_write

__all__ = [
    "BF16_CPU_FLAGS",
    "DistEnv",
    "MetricsHistory",
    "NonFiniteLossError",
    "PRECISIONS",
    "TrainRun",
    "TrainState",
    "TrainStateError",
    "add_run_arguments",
    "autocast",
    "cli_errors",
    "config_dict",
    "config_overrides",
    "cpu_info",
    "cpu_supports_bf16",
    "epoch_batches",
    "init_distributed",
    "load_train_checkpoint",
    "log",
    "quirk_names",
    "resolve_precision",
    "save_train_checkpoint",
    "seed_all",
    "select_device",
    "shutdown_distributed",
    "start_run",
    "step_generator",
    "warmup_lr",
    "wrap_ddp",
    "write_json",
]

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")
CHECKPOINT_NAME = "train_state.pt"
# 2: RNG states as tensors and plain values (weights_only); 1 held NumPy arrays.
TRAIN_STATE_FORMAT = "ssast_teach.train_state/2"


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the run stopped before the bad step touched the weights."""


class TrainStateError(CheckpointError):
    """A ``train_state.pt`` that cannot be resumed from; the message names the file and why."""


# ---------------------------------------------------------------- device, precision, seeds


def select_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else CUDA when present, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of native bf16 on a CPU


def cpu_info() -> dict[str, str]:
    """The first processor's fields of ``/proc/cpuinfo`` (``"model name"``, ``"flags"``, ...);
    empty where there is no such file."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    info: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    return info


def cpu_supports_bf16() -> bool:
    """True when this CPU computes bf16 natively (:data:`BF16_CPU_FLAGS`: ``avx512_bf16`` or
    ``amx_bf16``), where ``auto`` precision picks bf16 autocast.

    Measured on a 2-core Zen 4 (AVX512-BF16, no AMX), torch 2.14, quiet machine
    (``python -m ssast_teach.bench --only step --steps classroom,tiny --precision fp32,bf16``):
    the classroom pretraining step (mini, 128x128, batch 24) 0.069 s fp32, 0.040 s bf16
    (1.7x); the tiny step at 128x1024, batch 8, 2.48 s fp32, 0.89 s bf16 (2.8x). The scale study
    (``data/results/scale_study_bf16.json``) found bf16 pretraining's probes equal to fp32's
    within noise at every budget, so bf16 is the default wherever it is native.
    ``precision="fp32"`` still forces fp32.
    """
    return bool(set(cpu_info().get("flags", "").split()) & set(BF16_CPU_FLAGS))


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"fp32"`` or ``"bf16"``: what ``precision`` (one of :data:`PRECISIONS`) means on ``device``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_supports_bf16() else "fp32"


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to bf16 when ``precision == "bf16"``, else a no-op context."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_all(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def step_generator(seed: int, step: int, salt: int = 0) -> torch.Generator:
    """A CPU generator that depends only on (seed, step, salt): masks drawn from it are the
    same in a resumed run and in every process of a distributed run (chapter 06's loop draws
    each step's two masks from it)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 7919 + salt) % 2**63)


def _rng_state() -> dict:
    """Every RNG state as tensors and plain values, so ``weights_only=True`` reads it back."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),  # (version, tuple of 625 ints, gauss_next)
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------- distributed


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in a run: ``rank`` of ``world_size`` (1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device | None = None) -> DistEnv:
    """Join the process group that ``torchrun`` describes (``RANK``, ``WORLD_SIZE``, ...).

    Without those variables (a plain ``python`` or a notebook) this returns a one-process
    :class:`DistEnv` and starts nothing. Backend: nccl on CUDA, gloo on CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistEnv()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = device or select_device()
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank)


def shutdown_distributed() -> None:
    """Leave the process group if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(module: torch.nn.Module, env: DistEnv, device: torch.device) -> torch.nn.Module:
    """``DistributedDataParallel(module)`` when distributed, else ``module`` itself.

    ``find_unused_parameters=True`` because SSAST always carries parameters a step does not
    use (the ImageNet heads ``v.head*``, ``gpredlayer`` under ``pretrain_mpc``...).
    """
    if not env.distributed:
        return module
    ids = [device.index if device.index is not None else env.local_rank]
    return torch.nn.parallel.DistributedDataParallel(
        module, device_ids=ids if device.type == "cuda" else None, find_unused_parameters=True
    )


def log(env: DistEnv, message: str) -> None:
    """Log ``message`` at INFO on rank 0 only (see :func:`ssast_teach.log_to_stdout`)."""
    if env.is_main:
        logger.info(message)


def start_run(
    device: str | torch.device | None, precision: str, seed: int
) -> tuple[torch.device, DistEnv, str]:
    """Where and how a trainer computes: ``(device, env, precision)``, everything seeded.

    ``device`` None is CUDA when present; under ``torchrun`` this process joins the group and
    takes its local GPU; ``precision`` (one of :data:`PRECISIONS`) is resolved for the device.
    """
    device = select_device(device)
    env = init_distributed(device)
    if env.distributed and device.type == "cuda":
        device = torch.device("cuda", env.local_rank)
    precision = resolve_precision(precision, device)
    seed_all(seed)
    return device, env, precision


def _any_process(flag: bool, env: DistEnv) -> bool:
    """True when ``flag`` is True in at least one process, so that all of them act together."""
    if not env.distributed:
        return flag
    gloo = dist.get_backend() == "gloo"
    value = torch.tensor([float(flag)], device="cpu" if gloo else torch.cuda.current_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


# ---------------------------------------------------------------- data order


def epoch_batches(
    dataset: Dataset, batch_size: int, seed: int, epoch: int, env: DistEnv, *, shuffle: bool = True
) -> list[list[int]]:
    """This process's share of every global batch of ``epoch``: a list of index lists.

    The order is ``DistributedSampler(seed=seed).set_epoch(epoch)`` (a ``randperm`` seeded by
    ``seed + epoch``), last incomplete batch dropped like the official ``drop_last=True``.
    Process ``r`` of ``W`` gets ``batch_size // W`` items of each global batch (the sampler
    deals items round-robin), so the union over processes at step i is the one-process batch i.
    """
    if batch_size % env.world_size:
        raise ValueError(
            f"batch_size={batch_size} must be a multiple of the number of processes "
            f"({env.world_size}): it is the global batch, split evenly across processes"
        )
    sampler = DistributedSampler(
        dataset, num_replicas=env.world_size, rank=env.rank, shuffle=shuffle, seed=seed,
        drop_last=True,
    )
    sampler.set_epoch(epoch)
    indices = list(sampler)
    local = batch_size // env.world_size
    return [indices[i : i + local] for i in range(0, len(indices) - local + 1, local)]


def warmup_lr(
    step: int, base_lr: float, warmup_steps: int = 1000, every: int = 50, *,
    warmup_quirk: bool = True,
) -> float | None:
    """The lr to set before ``step`` during the linear warm-up, or None to leave it alone.

    Official (``warmup_quirk=True``): at steps 0, 50, ..., 1000 set lr = step / 1000 * base_lr.
    Official quirk: the lr is 0 for the first 50 steps (their Adam updates move nothing);
    ``warmup_quirk=False`` sets ``(step + 1) / warmup_steps * base_lr`` at every step.
    """
    if not warmup_quirk:
        return (step + 1) / warmup_steps * base_lr if step < warmup_steps else None
    if step <= warmup_steps and step % every == 0:
        return step / warmup_steps * base_lr
    return None


# ---------------------------------------------------------------- history and state


class MetricsHistory:
    """Rows of metrics (plain dicts), in the order they happened; notebooks plot them live."""

    def __init__(self, rows: list[dict] | None = None) -> None:
        self.rows: list[dict] = list(rows or [])

    def append(self, row: dict) -> None:
        self.rows.append(dict(row))

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.rows)

    def __getitem__(self, index: int) -> dict:
        return self.rows[index]

    def where(self, kind: str) -> list[dict]:
        """The rows of one ``kind`` (``"step"``, ``"eval"``, ``"epoch"``)."""
        return [row for row in self.rows if row.get("kind") == kind]

    def series(self, key: str, kind: str | None = None) -> tuple[list, list]:
        """``(steps, values)`` of ``key`` over the rows (of ``kind``) that have it."""
        rows = self.rows if kind is None else self.where(kind)
        pairs = [(row.get("step"), row[key]) for row in rows if key in row]
        return [s for s, _ in pairs], [v for _, v in pairs]

    def plot(self, keys: list[str] | str = "loss", kind: str | None = None, ax: Any = None) -> Any:
        """Plot ``keys`` against the step on a matplotlib ``ax`` (a new one if None)."""
        import matplotlib.pyplot as plt

        ax = ax if ax is not None else plt.figure(figsize=(6, 3)).gca()
        for key in [keys] if isinstance(keys, str) else keys:
            ax.plot(*self.series(key, kind), label=key)
        ax.set_xlabel("step")
        ax.legend()
        return ax


@dataclass
class TrainState:
    """Counters of a run. ``batch`` is how many batches of ``epoch`` are already consumed."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    extra: dict = field(default_factory=dict)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def save_train_checkpoint(
    path: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: TrainState,
    history: MetricsHistory,
    config: dict,
) -> Path:
    """Write everything a resume needs to ``path`` atomically (temp file, then ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": TRAIN_STATE_FORMAT,
        "model": _unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "state": asdict(state),
        "rng": _rng_state(),
        "history": history.rows,
        "config": config,
    }
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def write_json(path: str | Path, obj: object) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (a run's history, results, provenance)."""
    text = json.dumps(obj, indent=1, default=float)
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def load_train_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint written by :func:`save_train_checkpoint` (a file or a run directory).

    ``torch.load(weights_only=True)``: a file that holds code or Python objects other than
    tensors and plain values is refused with :class:`TrainStateError`, and nothing in it runs.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no training checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file; all mean "unusable"
        text = str(err)
        if "weights only load failed" in text.lower() or "unsupported global" in text.lower():
            raise TrainStateError(
                f"{path}: refused: the file holds code or Python objects other than tensors and "
                "plain values, which torch.load(weights_only=True) will not run. Nothing in it "
                "was executed. A run state written by ssast_teach never needs that: do not "
                "resume from this file."
            ) from None
        raise TrainStateError(
            f"{path}: cannot be read as a training checkpoint; it is truncated, corrupt or not "
            f"one ({type(err).__name__}: {text.splitlines()[0] if text else ''})"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != TRAIN_STATE_FORMAT:
        raise TrainStateError(
            f"{path}: not an ssast_teach training checkpoint (expected a dict with "
            f"format={TRAIN_STATE_FORMAT!r})"
        )
    return payload


# ---------------------------------------------------------------- around the loop


@dataclass
class TrainRun:
    """What a training loop iterates over and reports to; everything around the loop lives here.

    The loops of :func:`ssast_teach.pretrain.pretrain` (chapter 06) and
    :func:`ssast_teach.finetune.finetune` (chapter 07) are plain code, in the order of the
    loops the learner writes in those chapters; only the lines that name ``run`` are this::

        for epoch in run.epochs():          # 1, 2, ...; a resumed run starts at its saved epoch
            for x, y in run.batches():      # the epoch's batches, from the saved position
                step = run.state.step       # optimiser steps done so far
                ...                         # the lr, the forward pass, the loss
                run.check_finite(loss)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                run.record_step(loss, metrics)
                ...                         # an evaluation every N steps: run.record("eval", row)
            ...                             # an evaluation per epoch: run.record("epoch", row)

    Around that code: the data order (:func:`epoch_batches`), progress bars (or a log line every
    ``log_every`` steps), ``max_steps`` (the run stops there, mid-epoch if need be), and
    checkpoints (rank 0 writes; every ``checkpoint_every`` steps, after each recorded row of an
    evaluation, at each epoch end and at ``max_steps``). A run stops or saves only between two
    steps, when the code after a step has run too: a Ctrl-C (or a ``KeyboardInterrupt`` raised
    by ``callback``) lets the step in progress finish, saves, then raises
    ``KeyboardInterrupt``, so :meth:`resume` continues bit for bit; a second Ctrl-C stops at
    once, keeping the last checkpoint. Under ``torchrun`` every process stops at the same step.

    ``model`` is the plain module (checkpoints hold its weights); ``dataset`` yields ``(x, y)``;
    ``batch_size`` is the global batch; ``config`` is a plain dict saved with the run and
    checked on resume (``seed`` and ``batch_size`` must match: they fix the data order);
    ``callback(row)`` sees every history row on rank 0, as it is recorded.
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    dataset: Dataset
    batch_size: int
    n_epochs: int
    seed: int
    config: dict
    out_dir: Path | None = None
    checkpoint_every: int = 0
    env: DistEnv = field(default_factory=DistEnv)
    state: TrainState = field(default_factory=TrainState)
    history: MetricsHistory = field(default_factory=MetricsHistory)
    progress: bool = True  # tqdm bars; without them, a log line every log_every steps
    log_every: int = 25
    max_steps: int | None = None  # stop after this many steps, mid-epoch if need be
    callback: Callable[[dict], None] | None = None
    _order: list = field(default_factory=list, init=False, repr=False)  # this epoch's batches
    _bar: Any = field(default=None, init=False, repr=False)
    _stop: bool = field(default=False, init=False, repr=False)  # stop at the next boundary
    _save_due: bool = field(default=False, init=False, repr=False)  # save at the next boundary

    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.out_dir is None else Path(self.out_dir) / CHECKPOINT_NAME

    def save(self) -> None:
        """Checkpoint now (rank 0 only; other ranks do nothing)."""
        self._save_due = False
        if self.checkpoint_path is not None and self.env.is_main:
            save_train_checkpoint(
                self.checkpoint_path, model=self.model, optimizer=self.optimizer,
                scheduler=self.scheduler, state=self.state, history=self.history,
                config=self.config,
            )

    def resume(self, path: str | Path) -> None:
        """Load a checkpoint into this run so that its loop continues exactly where it was."""
        payload = load_train_checkpoint(path)
        for key in ("seed", "batch_size"):
            saved, now = payload["config"].get(key), self.config.get(key)
            if saved != now:
                raise TrainStateError(
                    f"cannot resume from {path}: it was run with {key}={saved!r}, this run has "
                    f"{key}={now!r} (the data order would differ)"
                )
        _unwrap(self.model).load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        if self.scheduler is not None and payload["scheduler"] is not None:
            self.scheduler.load_state_dict(payload["scheduler"])
        self.state = TrainState(**payload["state"])
        self.history = MetricsHistory(payload["history"])
        _set_rng_state(payload["rng"])

    # -- the two loops

    def epochs(self) -> Iterator[int]:
        """The epochs left to run, numbered from 1 like the official loop's; a checkpoint at
        each one's end. Ctrl-C is held while the loop runs (see the class docstring)."""
        state = self.state
        with self._ctrl_c_between_steps():
            while state.epoch < self.n_epochs and not self._reached_max_steps():
                self._order = epoch_batches(self.dataset, self.batch_size, self.seed,
                                            state.epoch, self.env)
                yield state.epoch + 1
                if state.batch == len(self._order):  # not when max_steps cut the epoch short
                    state.epoch += 1
                    state.batch = 0
                self._between_steps(save=True)

    def batches(self) -> Iterator[Any]:
        """The current epoch's batches ``(x, y)``, from the saved position on a resume, up to
        ``max_steps``. Each one is a step: the loop body calls :meth:`record_step` once."""
        state, order = self.state, self._order
        # A dedicated generator: DataLoader draws its base seed from it, not from the global
        # RNG, so a resumed run's global RNG stream is the uninterrupted one.
        loader = iter(DataLoader(
            self.dataset, batch_sampler=order[state.batch :],
            generator=torch.Generator().manual_seed(self.seed + state.epoch),
        ))
        self._bar = tqdm(
            total=len(order), initial=state.batch, desc=f"epoch {state.epoch + 1}/{self.n_epochs}",
            disable=not (self.progress and self.env.is_main), leave=False, file=sys.stdout,
        )
        with self._bar:
            while state.batch < len(order) and not self._reached_max_steps():
                yield next(loader)
                if state.batch < len(order) and not self._reached_max_steps():
                    self._between_steps()  # the epoch's end is epochs()'s

    # -- what the loop body reports

    def check_finite(self, loss: torch.Tensor) -> None:
        """Raise :class:`NonFiniteLossError` if ``loss`` is NaN or infinite in any process:
        called before backward, so the bad step changes no weight and no checkpoint."""
        if not _any_process(not bool(torch.isfinite(loss.detach()).all()), self.env):
            return
        state, path = self.state, self.checkpoint_path
        message = (
            f"the loss is {loss.detach().float().item()} at step {state.step} (epoch "
            f"{state.epoch + 1}); training stopped before this step changed any weight. "
            "Try a lower lr, or precision='fp32'."
        )
        if path is not None and path.exists():
            message += f" The last good checkpoint, {path}, is untouched: resume from it."
        raise NonFiniteLossError(message)

    def record_step(self, loss: torch.Tensor, metrics: dict | None = None) -> dict:
        """Count the optimiser step just taken and record its row: ``kind="step"``, ``step``
        (counted), ``epoch``, ``loss``, ``lr`` (of the first parameter group), ``metrics``."""
        state = self.state
        state.step += 1
        state.batch += 1
        row = {"kind": "step", "step": state.step, "epoch": state.epoch + 1,
               "loss": float(loss.detach()), "lr": self.optimizer.param_groups[0]["lr"],
               **(metrics or {})}
        self._bar.update(1)
        self._bar.set_postfix(loss=f"{row['loss']:.4g}", refresh=False)
        if not self.progress and self.log_every and state.step % self.log_every == 0:
            log(self.env, ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                    for k, v in row.items() if k != "kind"))
        if self.checkpoint_every and state.step % self.checkpoint_every == 0:
            self._save_due = True
        self._emit(row)
        return row

    def record(self, kind: str, row: dict) -> dict:
        """Record a row of ``kind`` (``"eval"``, ``"epoch"``) at the current step and epoch;
        the run is saved at the next step boundary, so a resume never repeats it."""
        row = {"kind": kind, "step": self.state.step, "epoch": self.state.epoch + 1, **row}
        self._save_due = True
        self._emit(row)
        return row

    # -- the step boundary

    def _emit(self, row: dict) -> None:
        self.history.append(row)
        if self.callback is not None and self.env.is_main:
            try:
                self.callback(row)
            except KeyboardInterrupt:  # the callback asks to stop: at the boundary, saved
                self._stop = True

    def _reached_max_steps(self) -> bool:
        return self.max_steps is not None and self.state.step >= self.max_steps

    def _between_steps(self, save: bool = False) -> None:
        """The one place a run saves or stops: every step and the code after it are done."""
        stop = _any_process(self._stop, self.env)
        if save or stop or self._save_due:
            self.save()
        if stop:
            log(self.env, f"interrupted after step {self.state.step}: saved to "
                f"{self.checkpoint_path}")
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def _ctrl_c_between_steps(self) -> Iterator[None]:
        """While the loop runs, Ctrl-C asks it to stop at the next step boundary; a second one
        raises at once. Outside the main thread no handler can be set (nor is SIGINT
        delivered there): only a callback's ``KeyboardInterrupt`` asks."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def ask(*_: object) -> None:
            if self._stop:
                raise KeyboardInterrupt
            self._stop = True

        previous = signal.signal(signal.SIGINT, ask)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


# ---------------------------------------------------------------- what both trainers' CLIs share


def config_dict(config: object) -> dict:
    """A config dataclass as plain JSON values (tuples become lists): saved with every run."""
    def plain(value: object) -> object:
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return {k: plain(v) for k, v in asdict(config).items()}


def quirk_names(config_cls: type) -> list[str]:
    """The quirks a config can correct: its fields ``<name>_quirk`` -> ``[name, ...]``."""
    return [f.name.removesuffix("_quirk") for f in dataclasses.fields(config_cls)
            if f.name.endswith("_quirk")]


def add_run_arguments(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """The options every trainer has: where the run lives, how it computes, which quirks to fix."""
    a = parser.add_argument
    a("--out", required=True, help="run directory: train_state.pt, the final model, results")
    a("--resume", help="continue a run exactly: its directory or train_state.pt (read with "
      "weights_only=True: a file holding code is refused)")
    a("--seed", type=int, help="seed of data order, masks, augmentation and init [default: 0]")
    a("--precision", choices=PRECISIONS, help="autocast dtype; auto = bf16 on CUDA and on CPUs "
      "with AMX, fp32 elsewhere [official: fp32]")
    a("--device", help="cpu, cuda, cuda:1 ... [default: CUDA when present]")
    a("--no-progress", action="store_true", help="log lines instead of progress bars")
    names = quirk_names(config_cls)
    a("--correct", nargs="+", default=[], choices=[*names, "all"], metavar="QUIRK",
      help="use the corrected behaviour instead of the official quirk (the config field "
      f"<QUIRK>_quirk=False): {', '.join(names)}, or all [official: none corrected]")


def config_overrides(args: argparse.Namespace, config_cls: type) -> dict:
    """The config fields the command line set: options given, ``--no-progress``, ``--correct``."""
    keys = {f.name for f in dataclasses.fields(config_cls)}
    overrides = {k: v for k, v in vars(args).items() if k in keys and v is not None}
    if args.no_progress:
        overrides["progress"] = False
    corrected = quirk_names(config_cls) if "all" in args.correct else args.correct
    overrides |= {f"{name}_quirk": False for name in corrected}
    return overrides


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """A trainer's command line: log lines on stdout; a bad setting, file or download exits
    with its message (which names the argument or file) instead of a traceback."""
    from ssast_teach import log_to_stdout

    log_to_stdout()
    try:
        yield
    except (ValueError, FileNotFoundError, DownloadError) as error:
        raise SystemExit(f"error: {error}") from None
