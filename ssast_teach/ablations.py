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
``audio_only``                as              ESC-10 only (AudioSet-2M only)
``audio_small``               as20k           a tenth of the ESC-10 clips (AudioSet-20K)
``speech_only``               librispeech     FSDD + Speech Commands only (LibriSpeech only)
``frame``                     Base-Frame-400  128x2 frame patches, frame masks
``scratch``                   Patch-Scratch   no pretraining: the random initial weights
``frame_scratch``             Frame-Scratch   the same, 128x2 frames
============================  ==============  ===============================================

Every run pretrains for the same number of steps (speech clips packed end to end, as the
course's pretraining does), once per seed. Each model is then scored by a **linear probe**
(:func:`ssast_teach.evaluate.probe`): the frozen encoder embeds every clip once (mean of its
patch tokens), and the baseline's logistic regression on those embeddings is scored by 5-fold
cross-validation over ESC-10's folds (400 test clips) and leave-one-speaker-out on FSDD (2000,
voices the probe has not heard), clip by clip. The paper fine-tunes the whole model; a probe
measures the pretrained features alone and costs one forward pass per clip.
:func:`findings` reads the paper's five findings (:data:`FINDINGS`) with paired tests on the
same clips over the seeds (:func:`ssast_teach.stats.compare`): each claim is "held beyond
noise", "inconclusive" or "reversed beyond noise", and :func:`finding_verdict` combines them;
:func:`kendall_tau` is the ranking agreement between the published and the reproduced
numbers of one factor.

The grid is made of cells, one (run, seed) each, kept in its own file as it finishes
(:func:`run_cell`): ``run_grid`` resumes where it stopped and spreads the cells over worker
processes, and :func:`assemble` gathers them into one results JSON with its provenance.
Command lines: ``python -m ssast_teach.ablations --scale classroom --out
data/results/ablations_classroom.json`` (minutes), ``python -m ssast_teach.ablations --scale
long --workers 2 --out data/results/ablations_long.json`` (hours of CPU: rerun the same command
after an interruption; ``--partial`` writes the cells done so far).
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import logging
import math
import multiprocessing
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import timm
import torch

from ssast_teach import code_version, log_to_stdout
from ssast_teach.checkpoints import REGISTRY, cached
from ssast_teach.checkpoints import published_results as _published_rows
from ssast_teach.datasets import DataSplit, pretraining_mix
from ssast_teach.evaluate import Scored, baseline, probe
from ssast_teach.model import SSASTModel
from ssast_teach.pretrain import PretrainConfig, pretrain
from ssast_teach.stats import VERDICTS, compare
from ssast_teach.training import (
    BF16_CPU_FLAGS,
    cpu_info,
    resolve_precision,
    seed_all,
    select_device,
    write_json,
)

logger = logging.getLogger("ssast_teach.ablations")  # not __name__: "__main__" under -m

__all__ = [
    "ABLATION_CHECKPOINTS",
    "FACTORS",
    "FINDINGS",
    "FINDING_VERDICTS",
    "MIXED",
    "OFFICIAL_PROBED",
    "RUNS",
    "SCALES",
    "AblationRun",
    "AblationScale",
    "Finding",
    "assemble",
    "comparison_rows",
    "difference_in_se",
    "factor_agreement",
    "finding_verdict",
    "findings",
    "kendall_tau",
    "load_results",
    "main",
    "probe_checkpoints",
    "published_scores",
    "readme_averages",
    "run_cell",
    "run_grid",
    "seeds_needed",
]

AUDIO_TASKS = ("as20k_map", "esc50_acc")  # README "average audio"
SPEECH_TASKS = ("ks2_acc", "ks1_acc", "sid_acc", "er_acc")  # README "average speech"
# course task (an ssast_teach.evaluate task) -> the README average it stands for
PROBE_TASKS = {"esc10": "audio", "fsdd_speakers": "speech"}
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
    data_fraction: float = 1.0  # the share of the pool's training clips it pretrains on


RUNS: dict[str, AblationRun] = {
    r.name: r
    for r in (
        AblationRun("joint", "SSAST-Base-Patch-400"),
        AblationRun("mask100", "audio_model_100m", masked_of_512=100),
        AblationRun("mask250", "SSAST-Base-Patch-250", masked_of_512=250),
        AblationRun("discriminative", "audio_model_dis", task="pretrain_mpc"),
        AblationRun("generative", "audio_model_gen", task="pretrain_mpg"),
        AblationRun("audio_only", "audio_model_as", data="audio"),
        # AudioSet-20K is about a hundredth of AudioSet-2M; a hundredth of the course's audio
        # pool would be 3 clips, fewer than ESC-10's 10 classes, so a tenth: the same step
        # from a large pool to a small one, at the course's size
        AblationRun("audio_small", "audio_model_as20k", data="audio", data_fraction=0.1),
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
                         ("audio, a tenth", "audio_small"), ("speech only", "speech_only")),
    "patch vs frame": (("patch", "joint"), ("frame", "frame")),
    "pretraining": (("self-supervised", "joint"), ("from scratch", "scratch")),
    "pretraining, frame": (("self-supervised", "frame"), ("from scratch", "frame_scratch")),
}

# The six ablation checkpoints the official README releases (paper Table 2).
ABLATION_CHECKPOINTS = tuple(n for n, info in REGISTRY.items() if info.kind == "ablation")
# What the official-checkpoint comparison probes: the six ablation models and the two base 400
# models they are read against.
OFFICIAL_PROBED = ("SSAST-Base-Patch-400", "SSAST-Base-Frame-400", *ABLATION_CHECKPOINTS)


@dataclass(frozen=True)
class AblationScale:
    """How big each run is. Every run gets the same steps, batch and clip count."""

    name: str
    input_tdim: int  # frames of pretraining (128 mel bins); probes read each task's own
    steps: int  # pretraining steps per run
    batch_size: int
    val_clips: int  # held out of the pretraining list, for pretrain()'s evaluation
    lr: float
    warmup_steps: int

    def mask_patch(self, run: AblationRun, num_patches: int) -> int | None:
        """The run's masked patches on this grid: the paper's count scaled by N / 512."""
        if run.masked_of_512 is None:
            return None
        return max(1, min(num_patches - 1, round(num_patches * run.masked_of_512 / PAPER_PATCHES)))


SCALES: dict[str, AblationScale] = {
    "ci": AblationScale("ci", input_tdim=64, steps=2, batch_size=4, val_clips=4, lr=5e-4,
                        warmup_steps=1),
    # Short runs: more, smaller steps at twice the official tiny lr learn more per second.
    "classroom": AblationScale("classroom", input_tdim=256, steps=120, batch_size=12,
                               val_clips=24, lr=1e-3, warmup_steps=20),
    # Where pretraining has changed the encoder: the scale study's recipe (128 x 128 inputs,
    # batch 24, lr 5e-4, 100 warm-up steps) at its first budget whose patch probe beat the
    # same model from scratch beyond noise (846 steps; ssast_teach.study). About 6 min a cell
    # on one loaded CPU core: the 27 pretraining cells of three seeds in ~80 min on 2 workers.
    "long": AblationScale("long", input_tdim=128, steps=846, batch_size=24, val_clips=64,
                          lr=5e-4, warmup_steps=100),
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
    rest = rest[: max(1, round(len(rest) * run.data_fraction))]
    # packed, several clips make one input: list enough clips for every step, stop at s.steps
    train = list(itertools.islice(itertools.cycle(rest), 4 * s.steps * s.batch_size))
    out, labels = work_dir / run.name, pool.labels
    DataSplit("train", train, labels).to_datafile(out / "train.json")
    DataSplit("val", val, labels).to_datafile(out / "val.json")
    DataSplit("labels", [], labels).write_label_csv(out / "labels.csv")
    config = PretrainConfig.preset(
        "ci" if s.name == "ci" else "classroom",
        size="mini", task=run.task, fshape=fshape, tshape=tshape, input_tdim=s.input_tdim,
        mask_patch=1, eval_mask_patch=None, batch_size=s.batch_size, epochs=1, lr=s.lr,
        pack_clips=True, max_steps=s.steps,
        # a short run: warm up over its first steps, the lr set at every step (not the
        # official every-50 schedule, which would leave a 60-step run at lr 0 for 50 steps)
        warmup_steps=s.warmup_steps, warmup_quirk=False, epoch_iter=s.steps,  # one eval, at the end
        train_json=str(out / "train.json"), val_json=str(out / "val.json"),
        label_csv=str(out / "labels.csv"), cache=True, progress=False,
        # a long cell stopped mid-run continues from its last checkpoint, exactly
        checkpoint_every=100,
        seed=seed,
    )
    config = replace(config, mask_patch=s.mask_patch(run, config.num_patches))
    start = time.perf_counter()
    state = out / "train_state.pt"
    model, history = pretrain(config, out_dir=out, resume=state if state.is_file() else None)
    evals = [row for row in history.rows if any(k.startswith("val_") for k in row)]
    record = {
        "pretrain_steps": s.steps, "mask_patch": config.mask_patch,
        "num_patches": config.num_patches, "pretrain_seconds": time.perf_counter() - start,
        "train_clips_distinct": len(set(c["wav"] for c in train)),
        "final_eval": {k: v for k, v in evals[-1].items() if k.startswith("val_")} if evals else {},
    }
    return model, record


def _versions() -> dict[str, str]:
    return {"ssast_teach": code_version(), "python": platform.python_version(),
            "torch": torch.__version__, "timm": timm.__version__, "numpy": np.__version__}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _cell_path(s: AblationScale, work_dir: str | Path, name: str, seed: int) -> Path:
    return Path(work_dir) / s.name / f"seed{seed}" / name / "cell.json"


def _settings(s: AblationScale, name: str, seed: int) -> dict:
    """What a cell's result depends on: a file made with other settings is not reused."""
    return json.loads(json.dumps({"run": asdict(RUNS[name]), "scale": asdict(s), "seed": seed}))


def _read_cell(s: AblationScale, work_dir: str | Path, name: str, seed: int) -> dict | None:
    """The finished cell ``(name, seed)`` of the grid at ``s``, or None (not run, or run with
    other settings)."""
    path = _cell_path(s, work_dir, name, seed)
    if not path.is_file():
        return None
    cell = json.loads(path.read_text(encoding="utf-8"))
    return cell if cell.get("settings") == _settings(s, name, seed) else None


def run_cell(name: str, scale: str | AblationScale, work_dir: str | Path, seed: int) -> dict:
    """Pretrain and probe one cell of the grid, run ``name`` at ``seed``, unless it is done.

    The cell's result goes to ``work_dir/<scale>/seed<seed>/<name>/cell.json``, written
    atomically once the probes are done: a file there made with the same run and scale
    settings is read back instead, so a grid stopped at any point continues at the next cell,
    and a pretraining stopped midway continues from its last checkpoint (every 100 steps).
    """
    s = _scale(scale)
    if (done := _read_cell(s, work_dir, name, seed)) is not None:
        return done
    settings, out = _settings(s, name, seed), _cell_path(s, work_dir, name, seed).parent
    begun = out / "settings.json"  # what a pretraining left half done there was run with
    if begun.is_file() and json.loads(begun.read_text(encoding="utf-8")) != settings:
        (out / "train_state.pt").unlink(missing_ok=True)  # other settings: start afresh
    write_json(begun, settings)
    started = _now()
    model, record = _pretrain_run(RUNS[name], s, Path(work_dir) / s.name / f"seed{seed}", seed)
    t0 = time.perf_counter()
    probes = {task: probe(model, task, name=name).to_dict() for task in PROBE_TASKS}
    record["probe_seconds"] = time.perf_counter() - t0
    cell = {"settings": settings, "record": record, "probe": probes,
            "started": started, "finished": _now(), "threads": torch.get_num_threads(),
            "precision": resolve_precision("auto", select_device()), "versions": _versions()}
    write_json(_cell_path(s, work_dir, name, seed), cell)
    return cell


def _pool_worker(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(threads)


def _pool_job(job: tuple[str, AblationScale, str, int]) -> dict:
    return run_cell(*job)


def run_grid(
    scale: str | AblationScale = "classroom",
    *,
    work_dir: str | Path = "runs/09_ablations",
    runs: Sequence[str] | None = None,
    seeds: Sequence[int] = (0,),
    command: str | None = None,
    threads: int | None = 1,
    workers: int = 1,
) -> dict:
    """Pretrain and probe every run of the grid (or ``runs``) at every seed; returns the
    results dict of :func:`assemble`.

    Each (run, seed) is one cell (:func:`run_cell`): pretrained and probed afresh, its result
    kept in its own file, so the grid resumes after an interruption (call it again: finished
    cells are read, not redone) and spreads over ``workers`` processes (each takes the next
    cell not yet done; cells go seed by seed, so a grid stopped early has every run at its
    first seeds). One INFO line per cell goes to the logger ``ssast_teach.ablations``
    (``ssast_teach.log_to_stdout(logger="ssast_teach.ablations")`` shows just those).

    ``threads`` pins torch's CPU threads in each process (None: leave them). The float sums of
    a training step come out in another order with another thread count, and a few hundred
    steps later the probe accuracies differ by a few points (measured: up to 3.75 on ESC-10
    with 2 threads instead of 1); one thread makes a rerun reproduce a cell exactly, however
    many workers share the grid.
    """
    s = _scale(scale)
    names = list(RUNS) if runs is None else list(runs)
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        raise ValueError(f"unknown runs {unknown}; known: {', '.join(RUNS)}")
    if workers < 1:
        raise ValueError(f"workers={workers} must be at least 1")
    start = time.perf_counter()
    todo = [(n, s, str(work_dir), seed) for seed in seeds for n in names
            if _read_cell(s, work_dir, n, seed) is None]
    logger.info(f"{s.name} grid: {len(names) * len(seeds) - len(todo)} of "
                f"{len(names) * len(seeds)} cells done before, {len(todo)} to run "
                f"({workers} worker{'s' if workers > 1 else ''})")

    def report(cell: dict) -> None:
        record, probes = cell["record"], cell["probe"]
        accs = ", ".join(f"{t} {v['accuracy']:.3f}" for t, v in probes.items())
        logger.info(f"{cell['settings']['run']['name']} seed {cell['settings']['seed']}: {accs} "
                    f"(pretrain {record['pretrain_seconds']:.0f} s, probe "
                    f"{record['probe_seconds']:.0f} s)")

    if workers == 1:
        previous_threads = torch.get_num_threads()
        _pool_worker(threads)
        try:
            for job in todo:
                report(run_cell(*job))
        finally:
            torch.set_num_threads(previous_threads)
    elif todo:
        # spawn, not fork: a forked child inherits the parent's OpenMP state and can hang
        with multiprocessing.get_context("spawn").Pool(
                min(workers, len(todo)), _pool_worker, (threads,)) as pool:
            for cell in pool.imap_unordered(_pool_job, todo):
                report(cell)
    return assemble(s, work_dir, names, seeds, command=command,
                    wall_seconds=time.perf_counter() - start, workers=workers)


def assemble(
    scale: str | AblationScale,
    work_dir: str | Path = "runs/09_ablations",
    runs: Sequence[str] | None = None,
    seeds: Sequence[int] = (0,),
    *,
    command: str | None = None,
    partial: bool = False,
    wall_seconds: float | None = None,
    workers: int | None = None,
) -> dict:
    """The results dict of the grid's finished cells under ``work_dir``.

    It holds the provenance (command, seeds, versions, machine and CPU flags, first start and
    last finish, the cells' summed seconds, threads, precision), the scale's settings, and per
    run: its factor settings, the published model it stands for, its pretraining record and
    per task its probe accuracy over the seeds done and ``correct``, the 0/1 result of each
    seed on each test clip, what :func:`findings` pairs. A cell not done raises
    FileNotFoundError, unless ``partial``: then a run holds the seeds done so far (its
    ``seeds``), a run with none is left out, and ``provenance["complete"]`` says which.
    """
    s = _scale(scale)
    names = list(RUNS) if runs is None else list(runs)
    cells = {(n, seed): _read_cell(s, work_dir, n, seed) for seed in seeds for n in names}
    missing = [f"{n} seed {seed}" for (n, seed), c in cells.items() if c is None]
    if missing and not partial:
        raise FileNotFoundError(
            f"{len(missing)} cells of the {s.name} grid are not done under {work_dir} "
            f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}): run the grid "
            "again (it continues where it stopped), or assemble with partial=True")
    results = []
    for name in names:
        done = [(seed, cells[name, seed]) for seed in seeds if cells[name, seed] is not None]
        if not done:
            continue
        records = [c["record"] for _, c in done]
        scored = {t: [Scored.from_dict(c["probe"][t]) for _, c in done] for t in PROBE_TASKS}
        results.append({**asdict(RUNS[name]), **records[0], "seeds": [seed for seed, _ in done],
                        "pretrain_seconds": sum(r["pretrain_seconds"] for r in records),
                        "probe_seconds": sum(r["probe_seconds"] for r in records),
                        "final_eval": [r.get("final_eval", {}) for r in records],
                        "probe": {t: _probe_entry(v) for t, v in scored.items()}})
    finished = [c for c in cells.values() if c is not None]

    def one_or_all(key: str) -> object:
        values = [c[key] for c in finished]
        distinct = [v for i, v in enumerate(values) if v not in values[:i]]
        return distinct[0] if len(distinct) == 1 else distinct

    info = cpu_info()
    provenance = {
        "command": command or f"ssast_teach.ablations.run_grid(scale={s.name!r}, "
                              f"seeds={list(seeds)})",
        "seeds": list(seeds),
        "complete": not missing,
        "cells_done": f"{len(finished)} of {len(cells)}",
        "versions": one_or_all("versions") if finished else _versions(),
        "started": min((c["started"] for c in finished), default=None),
        "finished": max((c["finished"] for c in finished), default=None),
        "date": _now(),
        # compute: each cell's pretraining and probes, summed over cells and processes
        "seconds": sum(c["record"]["pretrain_seconds"] + c["record"]["probe_seconds"]
                       for c in finished),
        "wall_seconds_last_call": wall_seconds,
        "workers": workers,
        "torch_threads": one_or_all("threads") if finished else None,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "cpu": info.get("model name") or platform.processor(),
        "cpu_bf16": [f for f in BF16_CPU_FLAGS if f in info.get("flags", "").split()],
        "device": "cpu" if not torch.cuda.is_available() else torch.cuda.get_device_name(),
        # what the runs' precision="auto" resolved to where they ran
        "precision": one_or_all("precision") if finished else None,
    }
    if missing:
        provenance["missing"] = missing
    return {
        "provenance": provenance,
        "scale": asdict(s),
        "probe": {"tasks": {t: {"evaluation": t, "n_test": len(results[0]["probe"][t]["correct"][0])}
                            for t in PROBE_TASKS} if results else {},
                  "method": "ssast_teach.evaluate.probe: logistic regression (L-BFGS, l2 1e-3) "
                            "on standardised mean-of-patch-token embeddings of the frozen "
                            "encoder, every fold of the task's named evaluation"},
        "runs": results,
    }


def _probe_entry(scored: Sequence[Scored]) -> dict:
    """One task's probe over seeds: mean accuracy, per seed, and the (seeds, clips) 0/1 array."""
    correct = np.concatenate([sc.correct for sc in scored])  # (n_seeds, n_clips)
    per_clip = correct.mean(0)  # (n_clips,) each clip's accuracy over seeds
    return {"acc": float(correct.mean()), "acc_per_seed": correct.mean(1).tolist(),
            "n_test": int(correct.shape[1]),
            "se": float(per_clip.std(ddof=1) / math.sqrt(len(per_clip))),
            "correct": correct.astype(int).tolist()}


def load_results(path: str | Path) -> dict:
    """A results JSON written by :func:`run_grid` / the command line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no ablation results; run python -m ssast_teach.ablations")
    results = json.loads(path.read_text(encoding="utf-8"))
    if "runs" not in results or "provenance" not in results:
        raise ValueError(f"{path}: not an ablation results file (no 'runs' / 'provenance')")
    return results


# ---------------------------------------------------------------- the official checkpoints


def probe_checkpoints(
    names: Sequence[str] = OFFICIAL_PROBED,
    *,
    cache_dir: str | Path | None = None,
) -> dict[str, dict | None]:
    """Linear-probe released checkpoints that are in the cache (verified against their download
    records; nothing is downloaded): ``name -> {task: probe entry}``, None when absent.

    The probe is the grid's (:func:`ssast_teach.evaluate.probe` on :data:`PROBE_TASKS`): each
    checkpoint read at the task's input length, strides equal to its patch shape.
    """
    out: dict[str, dict | None] = {}
    for name in names:
        path = cached(name, cache_dir)
        start = time.perf_counter()
        out[name] = None if path is None else {
            task: _probe_entry([probe(path, task, name=name)]) for task in PROBE_TASKS}
        if out[name] is not None:
            logger.info(f"{name}: " + ", ".join(f"{t} {out[name][t]['acc']:.3f}"
                                                for t in PROBE_TASKS)
                        + f" ({time.perf_counter() - start:.0f} s)")
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


# how a finding's claims combine into its verdict (finding_verdict)
MIXED = "mixed: held in part, reversed in part"
FINDING_VERDICTS = (*VERDICTS, MIXED, "not tested")


def finding_verdict(claims: Sequence[str]) -> str:
    """A finding's verdict from its claims' own verdicts (each one of ``stats.VERDICTS``).

    "held beyond noise" when every claim held; "reversed beyond noise" when at least one claim
    reversed and none held; :data:`MIXED` when some held and some reversed (a finding true on
    one task and false on another reads as both); "inconclusive" otherwise (none reversed,
    not every one held).
    """
    held, _, reversed_ = VERDICTS
    if all(c == held for c in claims):
        return held
    if reversed_ in claims:
        return MIXED if held in claims else reversed_
    return VERDICTS[1]


@dataclass(frozen=True)
class Finding:
    """One of the paper's findings, read on the reproduced probes with paired tests."""

    number: int
    statement: str
    verdict: str  # one of FINDING_VERDICTS
    evidence: str  # one line per claim, with the claim's own verdict
    comparisons: tuple[dict, ...] = ()  # stats.Comparison.to_dict() of each claim a > b, + task


# The paper's five findings (its Table 2 and patch-vs-frame table, as the README reports them),
# each a list of claims (task, a, b): "a scores above b on task". The audio task stands for the
# paper's audio average, the speech task for its speech average.
_AUDIO, _SPEECH = tuple(PROBE_TASKS)
FINDINGS: tuple[tuple[int, str, tuple[tuple[str, str, str], ...]], ...] = (
    (1, "Self-supervised pretraining beats training from scratch (patch and frame)",
     tuple((t, a, b) for a, b in (("joint", "scratch"), ("frame", "frame_scratch"))
           for t in PROBE_TASKS)),
    (2, "More masked patches is better for audio tasks (100 < 250 < 400)",
     ((_AUDIO, "mask250", "mask100"), (_AUDIO, "joint", "mask250"))),
    (3, "Joint > discriminative only > generative only",
     tuple((t, a, b) for t in PROBE_TASKS for a, b in (("joint", "discriminative"),
                                                       ("discriminative", "generative")))),
    (4, "Audio+speech data is best; small audio data still beats scratch; speech only is "
        "weakest on audio but strong on speech",
     ((_AUDIO, "joint", "audio_only"), (_AUDIO, "joint", "speech_only"),
      (_AUDIO, "audio_small", "scratch"), (_SPEECH, "audio_small", "scratch"),
      (_AUDIO, "audio_only", "speech_only"), (_SPEECH, "speech_only", "audio_only"))),
    (5, "Patch models are better for audio tasks, frame models for speech tasks",
     ((_AUDIO, "joint", "frame"), (_SPEECH, "frame", "joint"))),
)


def findings(results: Mapping, *, confidence: float = 0.95) -> list[Finding]:
    """The paper's five findings (:data:`FINDINGS`) on the reproduced probes: each claim
    ``a > b`` on one task read on the same test clips over the seeds
    (:func:`ssast_teach.stats.compare`: the paired bootstrap interval of the accuracy
    difference), the claims combined by :func:`finding_verdict`; "not tested" when a run is
    absent."""
    runs = _by_name(results)
    out = []
    for number, statement, claims in FINDINGS:
        if any(a not in runs or b not in runs for _, a, b in claims):
            out.append(Finding(number, statement, "not tested", "runs missing"))
            continue
        found = [compare(runs[a]["probe"][t]["correct"], runs[b]["probe"][t]["correct"],
                         name_a=a, name_b=b, confidence=confidence)
                 for t, a, b in claims]
        evidence = "\n".join(
            f"{t}: {a} {100 * c.accuracy_a:.1f} > {b} {100 * c.accuracy_b:.1f}? "
            f"{100 * c.diff:+.1f} [{100 * c.low:+.1f}, {100 * c.high:+.1f}] {c.verdict}"
            for (t, a, b), c in zip(claims, found, strict=True))
        out.append(Finding(number, statement, finding_verdict([c.verdict for c in found]),
                           evidence, tuple({"task": t, **c.to_dict()}
                                           for (t, _, _), c in zip(claims, found, strict=True))))
    return out


def seeds_needed(correct_a: object, correct_b: object, *, confidence: float = 0.95) -> float:
    """Seeds per model after which the paired interval of :func:`ssast_teach.stats.compare`
    would exclude 0, if the measured difference is the true one: ``inf`` when no number of
    seeds would (the clips' own spread hides the difference: more test clips or a larger
    effect are needed).

    ``correct_a``, ``correct_b``: ``(seeds, clips)`` 0/1, at least 2 seeds each. The variance
    of a clip's seed-averaged difference is the clips' own spread plus the seed noise over
    the seed count; the seed noise is measured as each clip's variance over its seeds, the
    clips' spread as what is left of the measured variance.
    """
    a, b = np.asarray(correct_a, dtype=float), np.asarray(correct_b, dtype=float)
    if min(len(a), len(b)) < 2:
        raise ValueError(f"seeds_needed needs 2 or more seeds a side, got {len(a)} and {len(b)}")
    per_clip = a.mean(0) - b.mean(0)  # (clips,)
    seed_noise = a.var(0, ddof=1).mean() + b.var(0, ddof=1).mean()  # one seed a side
    measured = per_clip.var(ddof=1)
    clip_spread = max(measured - a.var(0, ddof=1).mean() / len(a)
                      - b.var(0, ddof=1).mean() / len(b), 0.0)
    z = statistics.NormalDist().inv_cdf((1 + confidence) / 2)
    room = len(per_clip) * per_clip.mean() ** 2 / z**2 - clip_spread  # variance left for seeds
    return math.inf if room <= 0 else max(1.0, seed_noise / room)


# ---------------------------------------------------------------------------- command line


def _official(out: Path, cache_dir: Path | None, command: str) -> list[dict]:
    """Probe the cached official checkpoints and compare each with the baseline on the same
    clips; write ``out`` when any is in the cache. Returns the comparisons."""
    present = {n: p for n, p in probe_checkpoints(cache_dir=cache_dir).items() if p is not None}
    if not present:
        return []
    base = {task: baseline(task) for task in PROBE_TASKS}
    rows = [{"model": name, "task": task,
             **compare(p[task]["correct"], base[task].correct, name_a=name,
                       name_b="baseline").to_dict()}
            for name, p in present.items() for task in PROBE_TASKS]
    write_json(out, {"provenance": {"command": command, "versions": _versions(),
                                    "date": datetime.datetime.now(datetime.timezone.utc)
                                    .isoformat(timespec="seconds")},
                     "probes": present, "against_baseline": rows})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ssast_teach.ablations --scale classroom --out results.json``."""
    parser = argparse.ArgumentParser(
        prog="python -m ssast_teach.ablations",
        description="Rerun the SSAST paper's Table 2 factors at a course scale: pretrain each "
        "grid cell, linear-probe it on ESC-10 and FSDD, write a results JSON with provenance.",
    )
    parser.add_argument("--official", action="store_true",
                        help="instead of the grid: probe the official ablation and base 400 "
                        "checkpoints that are in the cache (download them first with python -m "
                        "ssast_teach.checkpoints download NAME), beside the baseline")
    parser.add_argument("--cache-dir", type=Path, help="with --official: the checkpoint cache "
                        "[$SSAST_TEACH_CACHE or ~/.cache/ssast-teach/checkpoints]")
    parser.add_argument("--scale", default="classroom", choices=list(SCALES),
                        help="ci (seconds), classroom (minutes on a 2-core CPU), long (about 80 min "
                        "with --workers 2 on a 2-core CPU)")
    parser.add_argument("--out", required=True, type=Path, help="results JSON to write")
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), help="a subset of the grid")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="each run is pretrained and probed once per seed [0 1 2]")
    parser.add_argument("--work-dir", default="runs/09_ablations",
                        help="run directories (datafiles, checkpoints) [runs/09_ablations]")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads per worker; 0 leaves them as they are. Results "
                        "depend on the count: 1 (default) reproduces the committed results")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes sharing the grid's cells, one per core [1]")
    parser.add_argument("--partial", action="store_true",
                        help="run nothing: write the results of the cells finished so far "
                        "(while the grid runs in another process, or after it was stopped)")
    args = parser.parse_args(argv)
    log_to_stdout()
    command = "python -m ssast_teach.ablations " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    if args.official:
        rows = _official(args.out, args.cache_dir, command)
        if not rows:
            print(f"none of {', '.join(OFFICIAL_PROBED)} is in the cache: download them first "
                  "(python -m ssast_teach.checkpoints download NAME)", file=sys.stderr)
            return 1
        for r in rows:
            print(f"{r['model']:<24} {r['task']:<14} {100 * r['accuracy_a']:5.1f} vs baseline "
                  f"{100 * r['accuracy_b']:5.1f}: {100 * r['diff']:+5.1f} {r['verdict']}")
        return 0
    if args.partial:
        results = assemble(args.scale, args.work_dir, args.runs, args.seeds, command=command,
                           partial=True)
    else:
        results = run_grid(args.scale, work_dir=args.work_dir, runs=args.runs, seeds=args.seeds,
                           command=command, threads=args.threads or None, workers=args.workers)
    write_json(args.out, results)
    for f in findings(results):
        print(f"finding {f.number} {f.verdict}: {f.evidence}")
    print(f"wrote {args.out} ({results['provenance']['cells_done']} cells, "
          f"{results['provenance']['seconds']:.0f} s of compute)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
