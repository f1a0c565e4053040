"""Checkers for chapter 07 (fine-tuning): average precision with ties, the confusion matrix,
linear probing, and (an extension checked by its properties) a padding-aware pooling.

The references are :func:`ssast_teach.finetune.average_precision`,
:func:`ssast_teach.finetune.confusion_matrix` and :func:`ssast_teach.finetune.param_groups`
with ``linear_probe=True``. Wrong answers that equal a known mistake (tied scores ranked one by
one, a transposed matrix, precision averaged over every rank, a frozen head norm, the official
mean over padded tokens, ...) are named in the message.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

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
    average_precision,
    confusion_matrix,
    param_groups,
)
from ssast_teach.model import SSASTModel

__all__ = [
    "check_average_precision",
    "check_confusion",
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
    passed(7, 4, f"your pooling equals each unpadded clip's mean and ignores the padding, its "
                 f"values and its amount, on {which}")
