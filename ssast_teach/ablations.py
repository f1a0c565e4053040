"""Chapter 09, ablations: the paper's Table 2 factors rerun at a course scale.

Each factor of the paper's ablation (Table 2, and its patch-vs-frame table) changes one
setting of the base patch model (joint objective, 400 of 512 patches masked, AudioSet +
LibriSpeech, 16x16 patches). Here the same changes are made to the course's ``mini`` model,
pretrained on the course audio with :func:`ssast_teach.pretrain.pretrain`:

============================  ==============  ===============================================
run                           paper model     what changes
============================  ==============  ===============================================
``joint``                     Base-Patch-400  nothing (the reference)
``mask100``, ``mask250``      100m, 250       masked patches 100 / 250 of 512 (same ratio)
``discriminative``            dis             ``pretrain_mpc`` only
``generative``                gen             ``pretrain_mpg`` only
``audio_only``                as              ESC-10 only (AudioSet only)
``speech_only``               librispeech     FSDD + Speech Commands only (LibriSpeech only)
``frame``                     Base-Frame-400  128x2 frame patches, frame masks
``scratch``                   Patch-Scratch   no pretraining: the random initial weights
``frame_scratch``             Frame-Scratch   the same, 128x2 frames
============================  ==============  ===============================================

Every run pretrains for the same number of steps on the same number of clips. Each model is
then scored by a **linear probe**: the frozen encoder embeds every clip once (mean of its patch
tokens, ``SSASTModel.embed``), and a logistic regression on those embeddings is trained on
ESC-10 folds 1-4 (test fold 5) and on FSDD takes 5-49 (test takes 0-4). The paper fine-tunes
the whole model; a probe measures the pretrained features alone and costs one forward pass per
clip. :func:`findings` states which of SPEC 7's five findings held; :func:`kendall_tau` is the
ranking agreement between the published and the reproduced numbers of one factor.

Command line: ``python -m ssast_teach.ablations --scale classroom --out
data/results/ablations_classroom.json`` (results JSON with provenance).
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import logging
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import Tensor

from ssast_teach import __version__, log_to_stdout
from ssast_teach.audio import FrontEndConfig
from ssast_teach.checkpoints import REGISTRY, cached, load_for_finetuning
from ssast_teach.checkpoints import published_results as _published_rows
from ssast_teach.datasets import (
    DataSplit,
    FbankDataset,
    esc10,
    fsdd,
    pretraining_mix,
)
from ssast_teach.datasets import default_cache_dir as fbank_cache_dir
from ssast_teach.model import SSASTModel
from ssast_teach.pretrain import PretrainConfig, pretrain
from ssast_teach.training import seed_all, write_json

logger = logging.getLogger(__name__)

__all__ = [
    "ABLATION_CHECKPOINTS",
    "FACTORS",
    "RUNS",
    "SCALES",
    "AblationRun",
    "AblationScale",
    "Finding",
    "comparison_rows",
    "difference_in_se",
    "factor_agreement",
    "findings",
    "kendall_tau",
    "linear_probe",
    "load_results",
    "main",
    "probe_checkpoints",
    "probe_inputs",
    "probe_model",
    "published_scores",
    "readme_averages",
    "run_grid",
]

AUDIO_TASKS = ("as20k_map", "esc50_acc")  # README "average audio"
SPEECH_TASKS = ("ks2_acc", "ks1_acc", "sid_acc", "er_acc")  # README "average speech"
PROBE_TASKS = {"esc10": "audio", "fsdd": "speech"}  # course task -> the README average it stands for
PAPER_MASKED, PAPER_PATCHES = 400, 512  # the reference: 400 of 512 patches masked


# ---------------------------------------------------------------------------------- the grid


@dataclass(frozen=True)
class AblationRun:
    """One cell of the grid: what it changes from the reference, and its published model."""

    name: str
    published: str  # model name in resources/published_results.csv
    task: str = "pretrain_joint"
    masked_of_512: int | None = PAPER_MASKED  # None: no pretraining (scratch)
    data: str = "both"  # audio / speech / both
    geometry: str = "patch"  # patch (16x16) / frame (128x2)


RUNS: dict[str, AblationRun] = {
    r.name: r
    for r in (
        AblationRun("joint", "SSAST-Base-Patch-400"),
        AblationRun("mask100", "audio_model_100m", masked_of_512=100),
        AblationRun("mask250", "SSAST-Base-Patch-250", masked_of_512=250),
        AblationRun("discriminative", "audio_model_dis", task="pretrain_mpc"),
        AblationRun("generative", "audio_model_gen", task="pretrain_mpg"),
        AblationRun("audio_only", "audio_model_as", data="audio"),
        AblationRun("speech_only", "audio_model_librispeech", data="speech"),
        AblationRun("frame", "SSAST-Base-Frame-400", geometry="frame"),
        AblationRun("scratch", "Patch-Scratch", masked_of_512=None),
        AblationRun("frame_scratch", "Frame-Scratch", masked_of_512=None, geometry="frame"),
    )
}

# factor -> its levels (label, run), in the paper's order; the reference level of a factor is
# its ``joint`` run, else its first (see comparison_rows)
FACTORS: dict[str, tuple[tuple[str, str], ...]] = {
    "masked patches": (("100", "mask100"), ("250", "mask250"), ("400", "joint")),
    "objective": (("joint", "joint"), ("discriminative", "discriminative"),
                  ("generative", "generative")),
    "pretraining data": (("audio+speech", "joint"), ("audio only", "audio_only"),
                         ("speech only", "speech_only")),
    "patch vs frame": (("patch", "joint"), ("frame", "frame")),
    "pretraining": (("self-supervised", "joint"), ("from scratch", "scratch")),
    "pretraining, frame": (("self-supervised", "frame"), ("from scratch", "frame_scratch")),
}

# The six ablation checkpoints the official README releases (paper Table 2).
ABLATION_CHECKPOINTS = tuple(n for n, info in REGISTRY.items() if info.kind == "ablation")


@dataclass(frozen=True)
class AblationScale:
    """How big each run is. Every run gets the same steps, batch and clip count."""

    name: str
    input_tdim: int  # frames of pretraining and probing (128 mel bins)
    steps: int  # pretraining steps per run
    batch_size: int
    val_clips: int  # held out of the pretraining list, for pretrain()'s evaluation
    lr: float
    esc10_train: int | None  # ESC-10 folds 1-4 clips for the probe (None: all 320)
    esc10_test: int | None  # fold 5 clips (None: all 80)
    fsdd_train: int | None  # FSDD takes 5-49 (None: all 1800)
    fsdd_test: int | None  # takes 0-4 (None: all 200)
    warmup_steps: int

    def mask_patch(self, run: AblationRun, num_patches: int) -> int | None:
        """The run's masked patches on this grid: the paper's count scaled by N / 512."""
        if run.masked_of_512 is None:
            return None
        return max(1, min(num_patches - 1, round(num_patches * run.masked_of_512 / PAPER_PATCHES)))


SCALES: dict[str, AblationScale] = {
    "ci": AblationScale("ci", input_tdim=64, steps=2, batch_size=4, val_clips=4, lr=5e-4,
                        esc10_train=20, esc10_test=10, fsdd_train=20, fsdd_test=20,
                        warmup_steps=1),
    # Short runs: more, smaller steps at twice the official tiny lr learn more per second.
    "classroom": AblationScale("classroom", input_tdim=256, steps=120, batch_size=12,
                               val_clips=24, lr=1e-3, esc10_train=None, esc10_test=None,
                               fsdd_train=300, fsdd_test=None, warmup_steps=20),
    # Not the paper's compute (the base model on AudioSet for days): the course grid run
    # longer, with every probe clip; sized for a GPU.
    "long": AblationScale("long", input_tdim=256, steps=1000, batch_size=48, val_clips=64,
                          lr=5e-4, esc10_train=None, esc10_test=None, fsdd_train=None,
                          fsdd_test=None, warmup_steps=100),
}


def _scale(scale: str | AblationScale) -> AblationScale:
    if isinstance(scale, AblationScale):
        return scale
    if scale not in SCALES:
        raise ValueError(f"scale={scale!r} is not one of {', '.join(SCALES)}")
    return SCALES[scale]


# --------------------------------------------------------------------- published numbers


def readme_averages(row: Mapping[str, object]) -> tuple[float | None, float | None]:
    """``(average audio, average speech)`` of one results row, as the README computes them:
    the mean of AS-20K mAP and ESC-50 accuracy, and the mean of KS2, KS1, SID and ER
    accuracies. None where a task has no published number."""

    def mean(tasks: Sequence[str]) -> float | None:
        values = [row.get(t) for t in tasks]
        if any(v is None or v == "" for v in values):
            return None
        return sum(float(v) for v in values) / len(values)

    return mean(AUDIO_TASKS), mean(SPEECH_TASKS)


def published_scores() -> dict[str, dict[str, float | None]]:
    """model -> ``{"audio", "speech", task: score...}`` from ``published_results.csv``; the
    averages recomputed from the per-task numbers where the row has them (the ablation rows
    publish no averages), else the README's."""
    out = {}
    for row in _published_rows():
        audio, speech = readme_averages(row)
        scores = {t: float(row[t]) if row[t] else None for t in (*AUDIO_TASKS, *SPEECH_TASKS)}
        readme_audio = float(row["avg_audio"]) if row["avg_audio"] else None
        readme_speech = float(row["avg_speech"]) if row["avg_speech"] else None
        out[row["model"]] = {
            "audio": audio if audio is not None else readme_audio,
            "speech": speech if speech is not None else readme_speech,
            **scores,
        }
    return out


# ------------------------------------------------------------------------ the linear probe


def _subset(split: DataSplit, n: int | None) -> DataSplit:
    """``n`` clips spread evenly over the (sorted) split, so every class keeps its share."""
    if n is None or n >= len(split):
        return split
    picks = np.linspace(0, len(split) - 1, n).round().astype(int)
    return DataSplit(split.name, [split.items[i] for i in picks], split.labels)


def _stack(split: DataSplit, front: FrontEndConfig) -> tuple[Tensor, Tensor]:
    ds = FbankDataset(split, front, cache=True, cache_dir=fbank_cache_dir())
    xs, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)
    return torch.stack(xs), torch.stack(ys).argmax(1)  # (N, T, F), (N,)


def probe_inputs(
    scale: str | AblationScale, input_tdim: int | None = None
) -> dict[str, tuple[Tensor, Tensor, Tensor, Tensor]]:
    """``task -> (x_train, y_train, x_test, y_test)`` for ``esc10`` and ``fsdd``.

    Inputs ``(N, T, 128)`` with the pretraining front end (AudioSet statistics, no
    augmentation): a frozen encoder is probed on the inputs it was pretrained on.
    """
    s = _scale(scale)
    front = FrontEndConfig(target_length=input_tdim or s.input_tdim)
    splits = {
        "esc10": (_subset(esc10([1, 2, 3, 4]), s.esc10_train), _subset(esc10([5]), s.esc10_test)),
        "fsdd": (_subset(fsdd("train"), s.fsdd_train), _subset(fsdd("test"), s.fsdd_test)),
    }
    return {task: (*_stack(tr, front), *_stack(te, front)) for task, (tr, te) in splits.items()}


@torch.no_grad()
def clip_embeddings(model: SSASTModel, x: Tensor, batch_size: int = 32) -> Tensor:
    """``(N, D)`` mean-of-patch-tokens embeddings of ``(N, T, F)`` inputs, in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = torch.cat([model.embed(xb.to(device)).float().cpu() for xb in x.split(batch_size)])
    model.train(was_training)
    return out  # (N, D)


def linear_probe(
    train_emb: Tensor, train_y: Tensor, test_emb: Tensor, test_y: Tensor,
    *, weight_decay: float = 1e-3, max_iter: int = 200,
) -> float:
    """Test accuracy of a multinomial logistic regression on standardised embeddings.

    Full-batch L-BFGS from zero weights: deterministic for given embeddings.
    """
    mean, std = train_emb.mean(0), train_emb.std(0).clamp_min(1e-6)
    a = ((train_emb - mean) / std).double()  # (N, D)
    b = ((test_emb - mean) / std).double()
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    w = torch.zeros(a.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, bias], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(a @ w + bias, train_y) + weight_decay * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((b @ w + bias).argmax(1) == test_y).double().mean())


def probe_model(
    model: SSASTModel | Callable[[str], SSASTModel],
    inputs: Mapping[str, tuple[Tensor, Tensor, Tensor, Tensor]],
) -> dict[str, dict[str, float]]:
    """``task -> {"acc", "n_test", "se"}``: linear-probe test accuracy of the frozen encoder.

    ``model`` is a model, or a function of the task name returning one (a checkpoint
    loaded at each task's input size). ``se`` is the binomial standard error of ``acc``.
    """
    out = {}
    for task, (x_tr, y_tr, x_te, y_te) in inputs.items():
        m = model(task) if callable(model) and not isinstance(model, SSASTModel) else model
        acc = linear_probe(clip_embeddings(m, x_tr), y_tr, clip_embeddings(m, x_te), y_te)
        out[task] = {"acc": acc, "n_test": len(y_te),
                     "se": math.sqrt(max(acc * (1 - acc), 1e-12) / len(y_te))}
    return out


# ----------------------------------------------------------------------- pretraining runs


def _pool(data: str, seed: int) -> DataSplit:
    """Pretraining clips of one data condition, shuffled. ``both`` alternates audio and speech
    clips half and half (the paper's mix is mostly AudioSet by clip count; on a short run half
    and half keeps either source from drowning the other)."""
    audio = pretraining_mix("audio", esc10_folds=(1, 2, 3, 4), seed=seed)
    speech = pretraining_mix("speech", seed=seed)
    if data == "audio":
        return audio
    if data == "speech":
        return speech
    both = [clip for pair in zip(audio.items, speech.items, strict=False) for clip in pair]
    return DataSplit("pretrain_audio_speech_balanced", both, audio.labels)


def _pretrain_run(
    run: AblationRun, s: AblationScale, work_dir: Path, seed: int
) -> tuple[SSASTModel, dict]:
    """Pretrain (or, for scratch, just initialise) one run's model; returns it and a record."""
    fshape, tshape = (16, 16) if run.geometry == "patch" else (128, 2)
    if run.masked_of_512 is None:
        seed_all(seed)
        model = SSASTModel.for_pretraining("mini", fshape, tshape, 128, s.input_tdim)
        return model, {"pretrain_steps": 0, "mask_patch": None, "pretrain_seconds": 0.0}
    pool = _pool(run.data, seed)
    val, rest = pool.items[: s.val_clips], pool.items[s.val_clips :]
    train = list(itertools.islice(itertools.cycle(rest), s.steps * s.batch_size))
    out, labels = work_dir / run.name, pool.labels
    DataSplit("train", train, labels).to_datafile(out / "train.json")
    DataSplit("val", val, labels).to_datafile(out / "val.json")
    DataSplit("labels", [], labels).write_label_csv(out / "labels.csv")
    config = PretrainConfig.preset(
        "ci" if s.name == "ci" else "classroom",
        size="mini", task=run.task, fshape=fshape, tshape=tshape, input_tdim=s.input_tdim,
        mask_patch=1, eval_mask_patch=None, batch_size=s.batch_size, epochs=1, lr=s.lr,
        # a short run: warm up over its first steps, the lr set at every step (not the
        # official every-50 schedule, which would leave a 60-step run at lr 0 for 50 steps)
        warmup_steps=s.warmup_steps, warmup_quirk=False, epoch_iter=None,
        train_json=str(out / "train.json"), val_json=str(out / "val.json"),
        label_csv=str(out / "labels.csv"), cache=True, checkpoint_every=0, progress=False,
        seed=seed,
    )
    config = replace(config, mask_patch=s.mask_patch(run, config.num_patches))
    start = time.perf_counter()
    model, history = pretrain(config, out_dir=out)
    evals = [row for row in history.rows if any(k.startswith("val_") for k in row)]
    record = {
        "pretrain_steps": s.steps, "mask_patch": config.mask_patch,
        "num_patches": config.num_patches, "pretrain_seconds": time.perf_counter() - start,
        "train_clips_distinct": len(set(c["wav"] for c in train)),
        "final_eval": {k: v for k, v in evals[-1].items() if k.startswith("val_")} if evals else {},
    }
    return model, record


def _versions() -> dict[str, str]:
    return {"ssast_teach": __version__, "python": platform.python_version(),
            "torch": torch.__version__, "timm": timm.__version__, "numpy": np.__version__}


def run_grid(
    scale: str | AblationScale = "classroom",
    *,
    work_dir: str | Path = "runs/09_ablations",
    runs: Sequence[str] | None = None,
    seed: int = 0,
    command: str | None = None,
    threads: int | None = 1,
) -> dict:
    """Pretrain and probe every run of the grid (or ``runs``); returns the results dict.

    ``work_dir/<scale>/<run>`` keeps each run's datafiles and checkpoints. The results hold
    the provenance (command, seed, versions, date, seconds, threads), the scale's settings, and
    per run: its factor settings, the published model it stands for, its pretraining record
    and its probe accuracies. One INFO line per run goes to the logger ``ssast_teach.ablations``
    (``ssast_teach.log_to_stdout(logger="ssast_teach.ablations")`` shows just those; the
    pretraining runs log under ``ssast_teach.training``).

    ``threads`` pins torch's CPU threads for the grid (None: leave them). The float sums of a
    training step come out in another order with another thread count, and a few hundred
    steps later the probe accuracies differ by a few points (measured: up to 3.75 on ESC-10
    with 2 threads instead of 1); one thread makes a rerun reproduce the cached file exactly.
    """
    s = _scale(scale)
    names = list(RUNS) if runs is None else list(runs)
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        raise ValueError(f"unknown runs {unknown}; known: {', '.join(RUNS)}")
    work = Path(work_dir) / s.name
    start = time.perf_counter()
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        used_threads = torch.get_num_threads()
        inputs = probe_inputs(s)
        results = []
        for name in names:
            run = RUNS[name]
            model, record = _pretrain_run(run, s, work, seed)
            t0 = time.perf_counter()
            probe = probe_model(model, inputs)
            record["probe_seconds"] = time.perf_counter() - t0
            results.append({**asdict(run), **record, "probe": probe})
            accs = ", ".join(f"{t} {p['acc']:.3f}" for t, p in probe.items())
            logger.info(f"{name}: {accs} (pretrain {record['pretrain_seconds']:.0f} s, "
                        f"probe {record['probe_seconds']:.0f} s)")
    finally:
        torch.set_num_threads(previous_threads)
    return {
        "provenance": {
            "command": command or f"ssast_teach.ablations.run_grid(scale={s.name!r}, seed={seed})",
            "seed": seed,
            "versions": _versions(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "seconds": time.perf_counter() - start,
            "torch_threads": used_threads,
            "cpu_count": os.cpu_count(),
            "device": "cpu" if not torch.cuda.is_available() else torch.cuda.get_device_name(),
        },
        "scale": asdict(s),
        "probe": {"tasks": {t: {"n_train": len(v[1]), "n_test": len(v[3])}
                            for t, v in inputs.items()},
                  "method": "logistic regression (L-BFGS, weight decay 1e-3) on standardised "
                            "mean-of-patch-token embeddings of the frozen encoder"},
        "runs": results,
    }


def load_results(path: str | Path) -> dict:
    """A results JSON written by :func:`run_grid` / the command line."""
    import json

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no ablation results; run python -m ssast_teach.ablations")
    results = json.loads(path.read_text(encoding="utf-8"))
    if "runs" not in results or "provenance" not in results:
        raise ValueError(f"{path}: not an ablation results file (no 'runs' / 'provenance')")
    return results


# ---------------------------------------------------------------- the official checkpoints


def probe_checkpoints(
    names: Sequence[str] = ("SSAST-Base-Patch-400", *ABLATION_CHECKPOINTS),
    scale: str | AblationScale = "classroom",
    *,
    cache_dir: str | Path | None = None,
    input_tdim: Mapping[str, int] | None = None,
    device: str | torch.device | None = None,
) -> dict[str, dict | None]:
    """Linear-probe released checkpoints that are in the cache: ``name -> probe`` (None when
    the file is absent; nothing is downloaded).

    Each is loaded with :func:`load_for_finetuning` at the task's input size (``input_tdim``,
    default: 512 frames for ESC-10 as the official ESC-50 recipe, 128 for FSDD as Speech
    Commands) and strides equal to its patch shape (no overlap: a quarter of the official
    10x10-stride cost).
    """
    lengths = {"esc10": 512, "fsdd": 128, **(input_tdim or {})}
    out: dict[str, dict | None] = {}
    present = {n: cached(n, cache_dir) for n in names}  # verified against their records
    if not any(present.values()):
        return dict.fromkeys(names)
    inputs = {t: probe_inputs(scale, lengths[t])[t] for t in PROBE_TASKS}
    for name, path in present.items():
        if path is None:
            out[name] = None
            continue
        info = REGISTRY[name]

        def load(task: str, path: Path = path, info=info) -> SSASTModel:
            return load_for_finetuning(path, n_classes=10, fstride=info.fshape,
                                       tstride=info.tshape, input_tdim=lengths[task],
                                       device=device)

        out[name] = probe_model(load, inputs)
    return out


# ---------------------------------------------------------------------- ranking agreement


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b between two equally long sequences (ties handled; NaN when either is
    constant). ``+1``: the same order, ``-1``: reversed."""
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"kendall_tau needs two sequences of the same length >= 2, got "
                         f"{len(x)} and {len(y)}")
    concordant = discordant = ties_x = ties_y = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            ties_x += 1
        elif dy == 0:
            ties_y += 1
        elif dx == dy:
            concordant += 1
        else:
            discordant += 1
    denom = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denom if denom else float("nan")


def difference_in_se(acc_a: float, n_a: int, acc_b: float, n_b: int) -> float:
    """``acc_a - acc_b`` in standard errors of the difference of two independent accuracies
    (``sqrt(p (1 - p) / n)`` each): about 2 or more is unlikely to be test-set noise alone."""
    var = max(acc_a * (1 - acc_a), 1e-12) / n_a + max(acc_b * (1 - acc_b), 1e-12) / n_b
    return (acc_a - acc_b) / math.sqrt(var)


def _by_name(results: Mapping) -> dict[str, dict]:
    return {r["name"]: r for r in results["runs"]}


def comparison_rows(results: Mapping) -> list[dict]:
    """One row per (factor, level): the published audio/speech averages of the paper's model
    next to the reproduced ESC-10 / FSDD probe accuracies (in %). ``reference`` marks the
    level the others change (``joint``, or the factor's first level). Runs absent from
    ``results`` are left out."""
    runs, published = _by_name(results), published_scores()
    rows = []
    for factor, levels in FACTORS.items():
        names = [name for _, name in levels]
        reference = "joint" if "joint" in names else names[0]
        for label, name in levels:
            if name not in runs:
                continue
            run, pub = runs[name], published[RUNS[name].published]
            rows.append({
                "factor": factor, "level": label, "run": name, "reference": name == reference,
                "paper_model": RUNS[name].published,
                "mask_patch": run.get("mask_patch"), "paper_audio": pub["audio"],
                "paper_speech": pub["speech"],
                **{t: 100 * run["probe"][t]["acc"] for t in PROBE_TASKS if t in run["probe"]},
                **{f"{t}_se": 100 * run["probe"][t]["se"] for t in PROBE_TASKS if t in run["probe"]},
            })
    return rows


def factor_agreement(results: Mapping) -> list[dict]:
    """Per factor and task: Kendall tau-b between the published and reproduced values of its
    levels, and whether the order is the same (tau = 1: every pair ordered alike, no ties)."""
    rows = comparison_rows(results)
    out = []
    for factor in FACTORS:
        levels = [r for r in rows if r["factor"] == factor]
        if len(levels) < 2:
            continue
        for task, side in PROBE_TASKS.items():
            paper = [r[f"paper_{side}"] for r in levels]
            ours = [r[task] for r in levels]
            tau = kendall_tau(paper, ours)
            out.append({"factor": factor, "task": task, "paper": f"average {side}",
                        "tau": tau, "same_order": tau == 1.0})  # NaN (all tied): not the same
    return out


@dataclass(frozen=True)
class Finding:
    """One of SPEC 7's findings, tested on the reproduced numbers."""

    number: int
    statement: str
    held: bool | None  # None: not testable with these runs
    evidence: str
    margin_se: float | None = None  # smallest gap of the comparisons, in standard errors


def findings(results: Mapping) -> list[Finding]:
    """SPEC 7's five findings on the reproduced probe accuracies: which held.

    Each is a set of strict comparisons ``a > b`` of one task's accuracy; ``held`` when all
    hold. ``margin_se`` is the smallest gap divided by the standard error of a difference of
    two accuracies: below about 2 a comparison is within the probe's noise.
    """
    runs = _by_name(results)

    def acc(name: str, task: str) -> float:
        return runs[name]["probe"][task]["acc"]

    def check(pairs: Sequence[tuple[str, str, str]]) -> tuple[bool | None, str, float | None]:
        if any(a not in runs or b not in runs for _, a, b in pairs):
            return None, "runs missing", None
        parts, margins = [], []
        for task, a, b in pairs:
            gap = acc(a, task) - acc(b, task)
            margins.append(difference_in_se(acc(a, task), runs[a]["probe"][task]["n_test"],
                                            acc(b, task), runs[b]["probe"][task]["n_test"]))
            parts.append(f"{task}: {a} {100 * acc(a, task):.1f} {'>' if gap > 0 else '<=' } "
                         f"{b} {100 * acc(b, task):.1f}")
        return all(m > 0 for m in margins), "; ".join(parts), min(margins)

    spec = [
        (1, "Self-supervised pretraining beats training from scratch (patch and frame)",
         [(t, a, b) for a, b in (("joint", "scratch"), ("frame", "frame_scratch"))
          for t in PROBE_TASKS]),
        (2, "More masked patches is better for audio tasks (100 < 250 < 400)",
         [("esc10", "mask250", "mask100"), ("esc10", "joint", "mask250")]),
        (3, "Joint > discriminative only > generative only",
         [(t, a, b) for t in PROBE_TASKS for a, b in (("joint", "discriminative"),
                                                      ("discriminative", "generative"))]),
        (4, "Audio+speech data is best; speech only is weakest on audio but strong on speech",
         [("esc10", "joint", "audio_only"), ("esc10", "joint", "speech_only"),
          ("esc10", "audio_only", "speech_only"), ("fsdd", "speech_only", "audio_only")]),
        (5, "Patch models are better for audio tasks, frame models for speech tasks",
         [("esc10", "joint", "frame"), ("fsdd", "frame", "joint")]),
    ]
    return [Finding(n, text, *check(pairs)) for n, text, pairs in spec]


# ---------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ssast_teach.ablations --scale classroom --out results.json``."""
    parser = argparse.ArgumentParser(
        prog="python -m ssast_teach.ablations",
        description="Rerun the SSAST paper's Table 2 factors at a course scale: pretrain each "
        "grid cell, linear-probe it on ESC-10 and FSDD, write a results JSON with provenance.",
    )
    parser.add_argument("--scale", default="classroom", choices=list(SCALES),
                        help="ci (seconds), classroom (minutes on a 2-core CPU), long (GPU)")
    parser.add_argument("--out", required=True, type=Path, help="results JSON to write")
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), help="a subset of the grid")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", default="runs/09_ablations",
                        help="run directories (datafiles, checkpoints) [runs/09_ablations]")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads; 0 leaves them as they are. Results depend on "
                        "the count: 1 (default) reproduces the cached classroom results")
    args = parser.parse_args(argv)
    log_to_stdout()
    command = "python -m ssast_teach.ablations " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    results = run_grid(args.scale, work_dir=args.work_dir, runs=args.runs, seed=args.seed,
                       command=command, threads=args.threads or None)
    write_json(args.out, results)
    for f in findings(results):
        state = {True: "held", False: "did not hold", None: "not tested"}[f.held]
        print(f"finding {f.number} {state}: {f.evidence}")
    print(f"wrote {args.out} ({results['provenance']['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
