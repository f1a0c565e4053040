"""Chapters 07 and 09, baselines: the simple baseline every model number of the course is read
against, pooled log-mel statistics and a logistic regression, scored on the same clips.

Each clip becomes one vector, the mean and the standard deviation of each mel bin over the
clip's real frames (:func:`pooled_logmel_stats`), and a multinomial logistic regression
(:class:`LogisticRegression`) classifies those vectors. No transformer, no pretraining, one
forward pass of the front end per clip: a model that does not beat this on the same split
has not yet shown it learned more than the clip's average spectrum.

:func:`pooled_stats_baseline` trains it on one :class:`~ssast_teach.datasets.DataSplit` and
scores another; its per-clip ``correct`` array is in the test split's order, so
:func:`ssast_teach.stats.compare` pairs it with a model scored on the same clips. Command line,
one JSON line per named evaluation of :func:`~ssast_teach.datasets.evaluation_splits`:
``python -m ssast_teach.baselines esc10_cv fsdd_standard``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ssast_teach.audio import FrontEndConfig
from ssast_teach.datasets import (
    EVALUATION_SPLITS,
    DataSplit,
    FbankDataset,
    default_cache_dir,
    evaluation_splits,
)

__all__ = [
    "BaselineResult",
    "LogisticRegression",
    "pooled_logmel_stats",
    "pooled_stats_baseline",
]

log = logging.getLogger(__name__)

# Clips whose fbanks are padded and pooled together: bounds memory (64 x 1024 x 128 floats).
_CHUNK = 64


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one thread, then restore the thread count. The baseline's ops are small, so
    a second thread only adds hand-offs: on a busy 2-core machine, 300 FSDD fbanks took 20 s on
    two threads and 0.4 s on one (measured). One thread also makes the fit's sums, hence the
    model, the same whatever the machine's thread count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def pooled_logmel_stats(fbanks: Tensor, lengths: Tensor | Sequence[int]) -> Tensor:
    """Mean and standard deviation of each mel bin over each clip's real frames: ``(B, 2F)``,
    the ``F`` means first.

    ``fbanks`` is a padded ``(B, T, F)`` batch and ``lengths`` the ``(B,)`` real frame counts
    (1 to ``T``); frames from ``lengths[i]`` on are padding and never read, whatever they hold.
    The standard deviation is the population one (divided by the length), 0 for a one-frame
    clip.
    """
    if fbanks.dim() != 3:
        raise ValueError(f"fbanks: expected a padded batch (B, T, F), got {tuple(fbanks.shape)}")
    lengths = torch.as_tensor(lengths, device=fbanks.device)
    b, t, _ = fbanks.shape
    if lengths.shape != (b,) or lengths.is_floating_point():
        raise ValueError(f"lengths: expected {b} integer frame counts, got {lengths!r}")
    if not bool(((lengths >= 1) & (lengths <= t)).all()):
        raise ValueError(f"lengths: every frame count must be in 1..{t} (T), got {lengths.tolist()}")
    real = (torch.arange(t, device=fbanks.device) < lengths[:, None])[..., None]  # (B, T, 1)
    count = lengths.to(fbanks.dtype)[:, None]  # (B, 1)
    # torch.where, not a product: padding may hold anything (NaN included) and must not leak.
    mean = torch.where(real, fbanks, 0).sum(1) / count  # (B, F)
    var = torch.where(real, (fbanks - mean[:, None]) ** 2, 0).sum(1) / count  # (B, F)
    return torch.cat([mean, var.sqrt()], dim=1)  # (B, 2F)


class LogisticRegression:
    """Multinomial logistic regression on standardised features, deterministic.

    :meth:`fit` standardises each feature with the training set's mean and standard deviation
    (a constant feature is left unscaled), then minimises the mean cross-entropy plus
    ``l2 * ||W||^2`` (the bias is not penalised) with full-batch L-BFGS from zero weights, in
    float64, on one thread: the same data gives the same model. The objective is convex, so the start and the
    order of the clips do not matter.
    """

    def __init__(self, l2: float = 1e-3, max_iter: int = 200):
        if not l2 >= 0:
            raise ValueError(f"l2 must be >= 0, got {l2!r}")
        if not (isinstance(max_iter, int) and max_iter >= 1):
            raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
        self.l2 = l2
        self.max_iter = max_iter
        self.mean: Tensor | None = None  # (D,) training-set feature statistics
        self.std: Tensor | None = None
        self.weight: Tensor | None = None  # (D, C)
        self.bias: Tensor | None = None  # (C,)

    @_one_thread()
    def fit(self, x: Tensor, y: Tensor, n_classes: int | None = None) -> LogisticRegression:
        """Fit ``(N, D)`` features to ``(N,)`` class indices; ``n_classes`` defaults to
        ``y.max() + 1`` (give it when a class may be missing from the training set)."""
        x = torch.as_tensor(x)
        y = torch.as_tensor(y)
        if x.dim() != 2 or x.shape[0] == 0:
            raise ValueError(f"x: expected features (N, D) with N >= 1, got {tuple(x.shape)}")
        if y.shape != (x.shape[0],) or y.is_floating_point():
            raise ValueError(f"y: expected {x.shape[0]} integer class indices, got {tuple(y.shape)}")
        n_classes = int(y.max()) + 1 if n_classes is None else n_classes
        if int(y.min()) < 0 or int(y.max()) >= n_classes:
            raise ValueError(f"y: class indices must be in 0..{n_classes - 1}, got "
                             f"{int(y.min())}..{int(y.max())}")
        x = x.double()
        self.mean = x.mean(0)
        std = x.std(0, correction=0)
        self.std = torch.where(std > 0, std, 1.0)
        a = (x - self.mean) / self.std  # (N, D)
        y = y.long()
        w = torch.zeros(x.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
        bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w, bias], max_iter=self.max_iter, line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(a @ w + bias, y) + self.l2 * (w**2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        self.weight, self.bias = w.detach(), bias.detach()
        return self

    def predict_proba(self, x: Tensor) -> Tensor:
        """``(N, C)`` class probabilities (float64) of ``(N, D)`` features."""
        if self.weight is None:
            raise RuntimeError("LogisticRegression: call fit(x, y) before predicting")
        x = torch.as_tensor(x)
        if x.dim() != 2 or x.shape[1] != self.weight.shape[0]:
            raise ValueError(f"x: expected features (N, {self.weight.shape[0]}), got "
                             f"{tuple(x.shape)}")
        a = (x.double() - self.mean) / self.std  # (N, D)
        return torch.softmax(a @ self.weight + self.bias, dim=1)  # (N, C)

    def predict(self, x: Tensor) -> Tensor:
        """``(N,)`` most probable class of each row of ``(N, D)`` features."""
        return self.predict_proba(x).argmax(1)


@dataclass(frozen=True)
class BaselineResult:
    """The baseline on one test split, clip by clip in the split's order."""

    test_name: str
    predictions: np.ndarray  # (N,) predicted class indices
    targets: np.ndarray  # (N,) true class indices
    correct: np.ndarray  # (N,) 1 where the prediction is right: stats.compare's input
    n_train: int

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())


def _class_indices(split: DataSplit) -> Tensor:
    """``(N,)`` class index of each clip; a multinomial baseline needs one label per clip."""
    index = split.label_index()
    out = []
    for item in split.items:
        mids = item["labels"].split(",")
        if len(mids) != 1 or mids[0] not in index:
            raise ValueError(f"{item['wav']}: the baseline needs one label of split "
                             f"{split.name!r} per clip, got {item['labels']!r}")
        out.append(index[mids[0]])
    return torch.tensor(out)


def _clip_features(dataset: FbankDataset, target_length: int) -> Tensor:
    """``(N, 2F)`` pooled statistics of each clip's first ``target_length`` frames, the frames
    the model reads after :func:`~ssast_teach.audio.pad_or_cut`."""
    chunks = []
    for start in range(0, len(dataset), _CHUNK):
        raws = [dataset.raw_fbank(i)[:target_length]  # (T_i, F), T_i <= target_length
                for i in range(start, min(start + _CHUNK, len(dataset)))]
        padded = torch.nn.utils.rnn.pad_sequence(raws, batch_first=True)  # (b, max T_i, F)
        chunks.append(pooled_logmel_stats(padded, [r.shape[0] for r in raws]))
    return torch.cat(chunks)  # (N, 2F)


@_one_thread()
def pooled_stats_baseline(
    train: DataSplit,
    test: DataSplit,
    *,
    num_mel_bins: int = 128,
    target_length: int = 1024,
    l2: float = 1e-3,
    cache: bool = True,
    cache_dir: str | Path | None = None,
) -> BaselineResult:
    """Train the pooled-statistics baseline on ``train``, score it on ``test``.

    Each clip's Kaldi fbank (the library's front end, ``num_mel_bins`` bins) is cut to its
    first ``target_length`` frames, as the model's input is; padding is never pooled. The
    default 1024 frames (10.24 s) reads every shipped clip whole; pass the model's
    ``input_tdim`` to read what the model reads. ``cache`` reuses the raw fbanks on disk, in
    ``cache_dir`` (default :func:`~ssast_teach.datasets.default_cache_dir`, the trainers').
    Both splits must share one label table.
    """
    if train.labels != test.labels:
        raise ValueError(f"train {train.name!r} and test {test.name!r} must share one label "
                         "table, the class indices of both")
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"train {train.name!r} ({len(train)} clips) and test {test.name!r} "
                         f"({len(test)} clips) both need clips")
    if not (isinstance(target_length, int) and target_length >= 1):
        raise ValueError(f"target_length must be a positive number of frames, got "
                         f"{target_length!r}")
    front = FrontEndConfig(num_mel_bins=num_mel_bins, target_length=target_length)
    folder = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) if cache else None
    x_train, x_test = (
        _clip_features(FbankDataset(split, front, cache_dir=folder), target_length)
        for split in (train, test)
    )
    y_train, y_test = _class_indices(train), _class_indices(test)
    model = LogisticRegression(l2=l2).fit(x_train, y_train, n_classes=len(train.labels))
    predictions = model.predict(x_test)
    log.info("pooled-stats baseline: trained on %d clips of %s, %.3f on %d clips of %s",
             len(train), train.name, float((predictions == y_test).double().mean()), len(test),
             test.name)
    return BaselineResult(
        test_name=test.name,
        predictions=predictions.numpy(),
        targets=y_test.numpy(),
        correct=(predictions == y_test).numpy().astype(np.int8),
        n_train=len(train),
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ssast_teach.baselines",
        description="Accuracy of the pooled log-mel statistics baseline on named evaluations: "
        "one JSON line each, every fold and all test clips pooled.",
    )
    # Checked below, not with choices=: argparse checks an empty nargs="*" list as one value.
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"evaluations to run ({', '.join(EVALUATION_SPLITS)}; default all)")
    parser.add_argument("--target-length", type=int, default=1024)
    parser.add_argument("--l2", type=float, default=1e-3)
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in EVALUATION_SPLITS]
    if unknown:
        parser.error(f"unknown evaluation {', '.join(unknown)}; expected some of "
                     f"{', '.join(EVALUATION_SPLITS)}")
    for name in args.names or EVALUATION_SPLITS:
        started = time.perf_counter()
        folds = {
            fold: pooled_stats_baseline(train, test, target_length=args.target_length, l2=args.l2)
            for fold, train, test in evaluation_splits(name)
        }
        correct = np.concatenate([r.correct for r in folds.values()])
        print(json.dumps({
            "evaluation": name,
            "accuracy": round(float(correct.mean()), 4),
            "n_test": int(correct.size),
            "folds": {fold: round(r.accuracy, 4) for fold, r in folds.items()},
            "target_length": args.target_length,
            "l2": args.l2,
            "seconds": round(time.perf_counter() - started, 1),
        }))


if __name__ == "__main__":
    main()
