"""Chapters 07 and 09, evaluate: an encoder scored on the course's named evaluations, clip by
clip, beside the pooled log-mel baseline, so that every comparison can be a paired one.

An evaluation (:data:`TASKS`) is one of :func:`~ssast_teach.datasets.evaluation_splits` read at
one input length: ESC-10 by 5-fold cross-validation over its official folds (all 400 clips),
FSDD leave-one-speaker-out (a voice the model has not heard) and on its standard split, the
Speech Commands sample on its official test list. Every method returns a :class:`Scored`: a
0/1 ``correct`` array ``(n_seeds, n_clips)`` over the test clips of every fold, in fold order,
the same clips for every method, so :func:`ssast_teach.stats.compare` pairs any two.

- :func:`baseline`: pooled log-mel statistics + logistic regression (:mod:`ssast_teach.baselines`);
- :func:`probe`: the frozen encoder's mean patch token + the same logistic regression;
- :func:`finetune_scores`: the chapter 07 trainer, one run per fold and seed, from a
  pretraining checkpoint or from scratch (the same architecture, random weights).

Input lengths are sized to the clips: FSDD digits last 0.39 s (median; 90% under 0.56 s), so
they are read at 48 frames (0.48 s), not padded to 1.28 s, where most of a clip's patch tokens,
hence most of its mean-pooled embedding, would be padding.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ssast_teach.audio import FrontEndConfig
from ssast_teach.baselines import LogisticRegression, pooled_stats_baseline
from ssast_teach.checkpoints import load_pretrained
from ssast_teach.datasets import DataSplit, FbankDataset, default_cache_dir, evaluation_splits
from ssast_teach.finetune import FinetuneConfig, finetune
from ssast_teach.model import SSASTModel

__all__ = ["TASKS", "EvalTask", "Scored", "baseline", "finetune_scores", "probe", "test_clips"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalTask:
    """One named evaluation: its folds, the input length every method reads, and the
    fine-tuning recipe (a classroom preset of :class:`~ssast_teach.finetune.FinetuneConfig`
    with these overrides)."""

    name: str
    split: str  # a name of datasets.EVALUATION_SPLITS
    input_tdim: int  # frames every method reads (the baseline too)
    recipe: str  # the FinetuneConfig preset
    finetune: dict = field(default_factory=dict)


TASKS: dict[str, EvalTask] = {
    t.name: t
    for t in (
        # ESC-10 clips last 5 s: 2.56 s of each, as chapter 07 reads them.
        EvalTask("esc10", "esc10_cv", 256, "esc10", dict(epochs=6)),
        # Spoken digits sized to the clip (see the module docstring), as the fsdd preset is.
        EvalTask("fsdd_speakers", "fsdd_speakers", 48, "fsdd", dict(epochs=3)),
        EvalTask("fsdd", "fsdd_standard", 48, "fsdd", dict(epochs=3)),
        EvalTask("speech_commands_mini", "speech_commands_mini", 128, "speech_commands_mini",
                 dict(epochs=10)),
    )
}


@dataclass(frozen=True)
class Scored:
    """One method on one evaluation: ``correct[s, i]`` is 1 when seed ``s`` got clip ``i``
    right, clips in :func:`test_clips` order."""

    method: str
    task: str
    correct: np.ndarray  # (n_seeds, n_clips) of 0/1
    folds: tuple[str, ...]

    @property
    def accuracy(self) -> float:
        """Mean over seeds and clips."""
        return float(self.correct.mean())

    def to_dict(self) -> dict:
        return {"method": self.method, "task": self.task, "accuracy": self.accuracy,
                "folds": list(self.folds), "correct": self.correct.astype(int).tolist()}

    @classmethod
    def from_dict(cls, d: Mapping) -> Scored:
        return cls(d["method"], d["task"], np.asarray(d["correct"], dtype=np.int8),
                   tuple(d["folds"]))


def _task(name: str) -> EvalTask:
    if name not in TASKS:
        raise ValueError(f"task={name!r} is not one of {', '.join(TASKS)}")
    return TASKS[name]


def test_clips(task: str) -> list[str]:
    """The test clips of every fold of ``task``, in fold order: the columns of ``correct``."""
    return [item["wav"] for _, _, test in evaluation_splits(_task(task).split)
            for item in test.items]


def baseline(task: str, **kwargs: object) -> Scored:
    """The pooled log-mel statistics baseline on every fold, reading the task's input length
    (``kwargs`` go to :func:`~ssast_teach.baselines.pooled_stats_baseline`)."""
    t = _task(task)
    folds = evaluation_splits(t.split)
    kwargs = {"target_length": t.input_tdim, **kwargs}
    correct = np.concatenate([pooled_stats_baseline(tr, te, **kwargs).correct
                              for _, tr, te in folds])
    return Scored("pooled log-mel stats", task, correct[None], tuple(f for f, _, _ in folds))


# ---------------------------------------------------------------- the frozen encoder


def _fbanks(split: DataSplit, input_tdim: int) -> tuple[Tensor, Tensor]:
    """``(N, T, 128)`` inputs (AudioSet statistics, no augmentation) and ``(N,)`` classes."""
    ds = FbankDataset(split, FrontEndConfig(target_length=input_tdim), cache=True,
                      cache_dir=default_cache_dir())
    xs, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)
    return torch.stack(xs), torch.stack(ys).argmax(1)


@torch.no_grad()
def _embeddings(model: SSASTModel, x: Tensor, batch_size: int = 64) -> Tensor:
    model.eval()
    return torch.cat([model.embed(xb).float() for xb in x.split(batch_size)])  # (N, D)


def probe(
    pretrained: str | Path | SSASTModel | Mapping[str, Tensor], task: str, *,
    name: str = "probe", l2: float = 1e-3,
) -> Scored:
    """Linear probe of a frozen pretraining encoder: its mean patch token of each clip, read at
    the task's input length (positional embedding adapted as for fine-tuning, strides equal to
    the patch shape), classified by the baseline's logistic regression, on every fold.

    Each clip is embedded once, however many folds it serves in.
    """
    t = _task(task)
    source = load_pretrained(pretrained) if isinstance(pretrained, str | Path) else pretrained
    if not isinstance(source, SSASTModel):
        source = SSASTModel.from_pretrained_state_dict(source)
    c = source.config
    encoder = SSASTModel.for_finetuning(source, n_classes=1, fstride=c.fshape,
                                        tstride=c.tshape, input_tdim=t.input_tdim)
    folds = evaluation_splits(t.split)
    clips = {it["wav"]: it for _, tr, te in folds for it in (*te.items, *tr.items)}
    every = DataSplit(t.split, list(clips.values()), folds[0][1].labels)
    x, y = _fbanks(every, t.input_tdim)
    emb = _embeddings(encoder, x)  # (N, D)
    row = {item["wav"]: i for i, item in enumerate(every.items)}
    correct = []
    for _, train, test in folds:
        tr = torch.tensor([row[it["wav"]] for it in train.items])
        te = torch.tensor([row[it["wav"]] for it in test.items])
        lr = LogisticRegression(l2=l2).fit(emb[tr], y[tr], n_classes=len(train.labels))
        correct.append((lr.predict(emb[te]) == y[te]).numpy().astype(np.int8))
    return Scored(name, task, np.concatenate(correct)[None], tuple(f for f, _, _ in folds))


# ---------------------------------------------------------------- fine-tuning


def finetune_scores(
    pretrained: str | Path | None, task: str, *, work_dir: str | Path,
    seeds: Sequence[int] = (0, 1, 2), name: str = "fine-tuned", **overrides: object,
) -> Scored:
    """The chapter 07 trainer on every fold and seed: ``pretrained`` a pretraining checkpoint,
    or None for the same architecture from scratch (``overrides`` then name its ``size``,
    ``fshape`` and ``tshape``). Each run lives in ``work_dir/<fold>/seed<s>``; its
    ``results.json`` clip by clip gives the fold's column of ``correct``.
    """
    t = _task(task)
    folds = evaluation_splits(t.split)
    if pretrained is not None:
        c = load_pretrained(pretrained).config
        overrides = {"size": c.size, "fshape": c.fshape, "tshape": c.tshape, **overrides}
    rows = []
    for seed in seeds:
        row = []
        for fold, train, test in folds:
            out = Path(work_dir) / fold / f"seed{seed}"
            train.to_datafile(out / "train.json")
            test.to_datafile(out / "test.json")
            train.write_label_csv(out / "labels.csv")
            geometry = overrides.get("fshape", 16), overrides.get("tshape", 16)
            config = FinetuneConfig.preset(
                t.recipe, "classroom", input_tdim=t.input_tdim, fstride=geometry[0],
                tstride=geometry[1], train_json=str(out / "train.json"),
                val_json=str(out / "test.json"), label_csv=str(out / "labels.csv"),
                seed=seed, progress=False, pos_embed_quirk=geometry == (16, 16),
                **{**t.finetune, **overrides},
            )
            _, _, results = finetune(config, pretrained=pretrained, out_dir=out)
            clips = results["per_clip"]
            if clips["wav"] != [it["wav"] for it in test.items]:
                raise RuntimeError(f"{out}: the test clips came back in another order")
            row.append(np.equal(clips["prediction"], clips["target"]).astype(np.int8))
            log.info("%s %s %s seed %d: %.3f", name, task, fold, seed, row[-1].mean())
        rows.append(np.concatenate(row))
    return Scored(name, task, np.stack(rows), tuple(f for f, _, _ in folds))
