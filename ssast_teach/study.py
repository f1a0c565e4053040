"""Chapter 09, study: what the course's own pretraining buys as it grows, and the course
reference checkpoint chosen from it.

:func:`pretrain_snapshots` runs one pretraining (an :data:`ARMS` entry: a model size and a patch
geometry, the classroom recipe with packed speech clips) and keeps the encoder at each budget of
pretraining steps: the run is stopped at a budget, the encoder saved, the run resumed exactly
(the trainer's checkpoint), so one run of the largest budget gives every smaller one, and a run
cut short by a crash or a Ctrl-C resumes where it was. :func:`run_study` scores every snapshot
with :mod:`ssast_teach.evaluate` (linear probe; fine-tuning at the budgets asked) beside the
pooled log-mel baseline and the same architecture from scratch, and writes one JSON with its
provenance after every result, so a study can be stopped and continued.

``python -m ssast_teach.study --arms mini-patch mini-frame --out data/results/scale_study.json``;
``python -m ssast_teach.study --reference`` remakes ``data/results/reference/``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import platform
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ssast_teach import code_version, log_to_stdout
from ssast_teach.checkpoints import load_checkpoint, save_checkpoint
from ssast_teach.download import atomic_write
from ssast_teach.evaluate import Scored, baseline, finetune_scores, probe
from ssast_teach.model import SSASTModel
from ssast_teach.pretrain import PretrainConfig, pretrain, steps_per_epoch
from ssast_teach.stats import compare
from ssast_teach.training import (
    BF16_CPU_FLAGS,
    config_dict,
    cpu_info,
    load_train_checkpoint,
    write_json,
)

__all__ = ["ARMS", "BUDGETS", "StudyArm", "pretrain_config", "pretrain_snapshots", "run_study"]

log = logging.getLogger(__name__)

# Pretraining steps: the classroom run of the first course version (282 steps) up to 30 times it.
BUDGETS = (282, 846, 2820, 8460)
PROBE_TASKS = ("esc10", "fsdd_speakers")


@dataclass(frozen=True)
class StudyArm:
    """One pretraining of the study: model size, patch geometry, the budgets it is read at."""

    name: str
    size: str
    geometry: str  # patch (16x16) or frame (128x2)
    budgets: tuple[int, ...]
    precision: str = "fp32"  # bf16: autocast, to see whether it changes what is learned

    @property
    def shape(self) -> tuple[int, int]:
        return (16, 16) if self.geometry == "patch" else (128, 2)


ARMS: dict[str, StudyArm] = {
    a.name: a
    for a in (
        StudyArm("mini-patch", "mini", "patch", BUDGETS),
        StudyArm("mini-frame", "mini", "frame", BUDGETS),
        # tiny (5.5 M parameters, 12 blocks) costs 13x a mini step on a CPU (1.3 s against
        # 0.1 s, one thread, measured): 846 steps take 18 minutes, 8460 would take 3 hours,
        # so its larger budgets are GPU work (see the README's scale-study section).
        StudyArm("tiny-patch", "tiny", "patch", BUDGETS[:2]),
        StudyArm("tiny-frame", "tiny", "frame", BUDGETS[:1]),
        # the mini-patch run in bf16 autocast: is the downstream result the same?
        StudyArm("mini-patch-bf16", "mini", "patch", BUDGETS[:3], precision="bf16"),
    )
}


def pretrain_config(arm: StudyArm, seed: int = 0, **overrides: object) -> PretrainConfig:
    """The classroom recipe for ``arm`` with packed clips, long enough for its largest budget."""
    fshape, tshape = arm.shape
    # Evaluate (and let ReduceLROnPlateau act) every 282 steps, as the official code does every
    # epoch_iter steps, not every epoch: an epoch of the packed course mix is 36 steps, and on
    # its 25 held-out inputs the plateau rule, evaluated that often, had halved the lr to 1e-8
    # by step 3400 of a first run (measured), so longer budgets learned nothing more.
    base = PretrainConfig.preset(
        "classroom", size=arm.size, fshape=fshape, tshape=tshape, pack_clips=True, seed=seed,
        progress=False, checkpoint_every=0, precision=arm.precision, epoch_iter=BUDGETS[0],
        **overrides,
    )
    # enough epochs for the largest budget, which stops the run mid-epoch
    return replace(base, epochs=math.ceil(max(arm.budgets) / steps_per_epoch(base)))


def pretrain_snapshots(
    arm: StudyArm, work_dir: str | Path, *, seed: int = 0, config: PretrainConfig | None = None,
) -> dict[int, Path]:
    """``budget -> checkpoint`` of ``arm``'s encoder after that many pretraining steps.

    One run, in legs: each leg resumes ``work_dir/run`` exactly and stops at the next budget
    (``max_steps``), so the encoder at 282 steps is the one a longer run had at step 282.
    Snapshots already in ``work_dir/snapshots`` are kept.
    """
    config = config or pretrain_config(arm, seed)
    work = Path(work_dir)
    run, snaps = work / "run", work / "snapshots"
    out: dict[int, Path] = {}
    for budget in sorted(arm.budgets):
        path = snaps / f"step{budget}.pth"
        if not path.is_file():
            resume = run if (run / "train_state.pt").is_file() else None
            start = time.perf_counter()
            model, history = pretrain(replace(config, max_steps=budget), out_dir=run,
                                      resume=resume)
            save_checkpoint(model, path, extra={
                "config": config_dict(config), "step": budget, "arm": arm.name, "seed": seed,
                "seconds_this_leg": time.perf_counter() - start, "ssast_teach": code_version(),
                "validation": history.where("eval"),
            })
            log.info("%s: step %d saved to %s", arm.name, budget, path)
        out[budget] = path
    return out


# ---------------------------------------------------------------- the study


def provenance(command: str, seed: int) -> dict:
    """Who made a result, how, where and when."""
    info = cpu_info()
    cpu = info.get("model name") or platform.processor()
    flags = info.get("flags", "").split()
    return {
        "command": command, "seed": seed, "ssast_teach": code_version(), "torch": torch.__version__,
        "python": platform.python_version(), "machine": platform.machine(), "cpu": cpu,
        "cpu_bf16": [f for f in BF16_CPU_FLAGS if f in flags],
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _scored(results: dict, key: str, make: Callable[[], Scored], save: Callable[[], None]) -> Scored:
    """``results["scores"][key]``, computed by ``make`` (and saved) unless already there."""
    scores = results.setdefault("scores", {})
    if key not in scores:
        start = time.perf_counter()
        scored = make()
        scores[key] = {**scored.to_dict(), "seconds": time.perf_counter() - start}
        save()
        log.info("%s: %.3f", key, scored.accuracy)
    return Scored.from_dict(scores[key])


def run_study(
    arms: Sequence[str], out: str | Path, *, work_dir: str | Path = "runs/study",
    finetune_budgets: Sequence[int] = (), seeds: Sequence[int] = (0, 1, 2), seed: int = 0,
    command: str | None = None, threads: int | None = 1,
) -> dict:
    """Pretrain every arm to its largest budget, score each snapshot (probe on
    :data:`PROBE_TASKS`; fine-tuning on ESC-10 and FSDD by speaker at ``finetune_budgets``,
    over ``seeds``), with the baseline and from-scratch models on the same clips, and the
    paired comparisons. ``out`` is rewritten after every result; what it holds is not redone.
    ``threads`` pins torch's CPU threads (one: a rerun gives the same numbers on the same CPU).
    """
    out, work = Path(out), Path(work_dir)
    if threads is not None:
        torch.set_num_threads(threads)
    results = _load(out)
    results.setdefault("provenance", provenance(command or "ssast_teach.study.run_study", seed))
    results["budgets"] = {a: list(ARMS[a].budgets) for a in arms}

    def save() -> None:
        results["provenance"]["updated"] = datetime.datetime.now(
            datetime.timezone.utc).isoformat(timespec="seconds")
        write_json(out, results)

    for task in PROBE_TASKS:
        _scored(results, f"baseline/{task}", lambda task=task: baseline(task), save)
    for name in arms:
        arm = ARMS[name]
        fshape, tshape = arm.shape
        config = pretrain_config(arm, seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the scratch encoder: random weights, the same each rerun
            scratch = SSASTModel.for_pretraining(arm.size, fshape, tshape, 128, config.input_tdim)
        for task in PROBE_TASKS:
            _scored(results, f"{name}/scratch/probe/{task}",
                    lambda task=task, m=scratch: probe(m, task, name="scratch probe"), save)
        snaps = pretrain_snapshots(arm, work / name, seed=seed, config=config)
        for budget, path in snaps.items():
            for task in PROBE_TASKS:
                _scored(results, f"{name}/step{budget}/probe/{task}",
                        lambda task=task, path=path: probe(path, task), save)
        for budget in [b for b in finetune_budgets if b in snaps]:
            for task in PROBE_TASKS:
                kw = dict(work_dir=work / name / "finetune" / f"step{budget}" / task, seeds=seeds)
                _scored(results, f"{name}/step{budget}/finetune/{task}",
                        lambda task=task, kw=kw, p=snaps[budget]: finetune_scores(p, task, **kw),
                        save)
        if finetune_budgets:
            for task in PROBE_TASKS:
                kw = dict(work_dir=work / name / "finetune" / "scratch" / task, seeds=seeds,
                          size=arm.size, fshape=fshape, tshape=tshape, name="scratch")
                _scored(results, f"{name}/scratch/finetune/{task}",
                        lambda task=task, kw=kw: finetune_scores(None, task, **kw), save)
    results["comparisons"] = comparisons(results)
    save()
    return results


def comparisons(results: dict) -> list[dict]:
    """Every pretrained score against the baseline and against the same method from scratch,
    on the same clips: the paired difference, its interval and the three-state verdict."""
    scores = {k: Scored.from_dict(v) for k, v in results.get("scores", {}).items()}
    rows = []
    for key, s in scores.items():
        parts = key.split("/")
        if len(parts) != 4 or parts[1] == "scratch":
            continue
        arm, budget, method, task = parts
        for other_key, label in ((f"baseline/{task}", "baseline"),
                                 (f"{arm}/scratch/{method}/{task}", "scratch")):
            if other_key in scores:
                c = compare(s.correct, scores[other_key].correct, name_a=key, name_b=other_key)
                rows.append({"arm": arm, "budget": int(budget.removeprefix("step")),
                             "method": method, "task": task, "against": label, **c.to_dict()})
    return rows


# ---------------------------------------------------------------- the reference checkpoint

REFERENCE_DIR = Path("data") / "results" / "reference"


def make_reference(
    arm: str = "mini-patch", budget: int = BUDGETS[-1], *, name: str = "pretrained",
    work_dir: str | Path = "runs/study", out_dir: str | Path = REFERENCE_DIR, seed: int = 0,
    command: str | None = None,
) -> Path:
    """Pretrain (or reuse) ``arm``'s snapshot at ``budget`` and publish it as a course
    reference: ``out_dir/<name>.pth`` and its provenance (command, seed, versions, hardware,
    time, the validation curve), ``out_dir/provenance<suffix>.json`` where ``name`` is
    ``pretrained<suffix>`` (``pretrained``: ``provenance.json``; ``pretrained_frame``:
    ``provenance_frame.json``)."""
    if not name.startswith("pretrained"):
        raise ValueError(f"name={name!r} must start with 'pretrained' (e.g. pretrained_frame)")
    a = ARMS[arm]
    if budget not in a.budgets:
        raise ValueError(f"budget={budget} is not one of {arm}'s budgets {a.budgets}")
    start = time.perf_counter()
    snaps = pretrain_snapshots(a, Path(work_dir) / arm, seed=seed)
    path = snaps[budget]
    out_dir = Path(out_dir)
    target = atomic_write(out_dir / f"{name}.pth", lambda tmp: shutil.copyfile(path, tmp))
    state = load_train_checkpoint(Path(work_dir) / arm / "run")
    curve = [{k: r[k] for k in ("step", "val_acc", "val_nce", "val_mse", "lr") if k in r}
             for r in state["history"] if r.get("kind") == "eval" and r["step"] <= budget]
    write_json(out_dir / f"provenance{name.removeprefix('pretrained')}.json", {
        **provenance(command or f"ssast_teach.study.make_reference({arm!r}, {budget})", seed),
        "arm": arm, "budget_steps": budget, "config": state["config"],
        "seconds_this_call": time.perf_counter() - start,
        # the legs of the run up to this budget, as each snapshot recorded its own
        "pretrain_seconds": sum(load_checkpoint(p)[1]["seconds_this_leg"]
                                for b, p in snaps.items() if b <= budget),
        "validation_curve": curve,
        "remake": f"python -m ssast_teach.study --reference --reference-arm {arm} "
                  f"--reference-budget {budget} --reference-name {name}",
    })
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ssast_teach.study",
        description="The course's scale study (pretraining budget against downstream accuracy, "
        "beside the baseline and from-scratch models) and the course reference checkpoint.",
    )
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=["mini-patch"])
    parser.add_argument("--out", type=Path, default=Path("data/results/scale_study.json"))
    parser.add_argument("--work-dir", type=Path, default=Path("runs/study"))
    parser.add_argument("--finetune-budgets", type=int, nargs="*", default=[],
                        help="budgets also fine-tuned (3 seeds x every fold: minutes each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads; 0 leaves them")
    parser.add_argument("--reference", action="store_true",
                        help="publish the reference checkpoint in data/results/reference/")
    parser.add_argument("--reference-arm", default="mini-patch", choices=list(ARMS))
    parser.add_argument("--reference-budget", type=int, default=BUDGETS[-1])
    parser.add_argument("--reference-name", default="pretrained",
                        help="file name in data/results/reference/ (pretrained, pretrained_frame)")
    args = parser.parse_args(argv)
    log_to_stdout()
    command = "python -m ssast_teach.study " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    if args.reference:
        if args.threads:
            torch.set_num_threads(args.threads)  # as the study's runs: the same numbers again
        print(make_reference(args.reference_arm, args.reference_budget, name=args.reference_name,
                             work_dir=args.work_dir, seed=args.seed, command=command))
        return 0
    results = run_study(args.arms, args.out, work_dir=args.work_dir,
                        finetune_budgets=args.finetune_budgets, seed=args.seed, command=command,
                        threads=args.threads or None)
    for row in results["comparisons"]:
        print(f"{row['arm']} step {row['budget']} {row['method']} {row['task']} vs "
              f"{row['against']}: {row['diff']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}] "
              f"{row['verdict']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
