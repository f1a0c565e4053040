"""Checkers for chapter 07 (fine-tuning): average precision, the confusion matrix, linear probing.

The references are :func:`ssast_teach.finetune.average_precision`,
:func:`ssast_teach.finetune.confusion_matrix` and :func:`ssast_teach.finetune.param_groups`
with ``linear_probe=True``. Wrong answers that equal a known mistake (a transposed matrix,
precision averaged over every rank, a frozen head norm, ...) are named in the message.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ssast_teach.exercises import ExerciseError, call_student, check_with_hints, checker, passed
from ssast_teach.finetune import HEAD, average_precision, confusion_matrix
from ssast_teach.model import SSASTModel

# ---------------------------------------------------------------------------- exercise 1


def _ap_cases(hidden: bool) -> list[tuple[str, Tensor, Tensor]]:
    """Seeded ``(case, scores (N,), labels (N,))``: distinct scores, at least one positive."""
    specs = [(701, 10, 0.4), (702, 25, 0.2)]  # (seed, N, fraction of positives)
    if hidden:
        specs += [(703, 1, 1.0), (704, 200, 0.05), (705, 7, 1.0), (706, 40, 0.9)]
    cases = []
    for seed, n, rate in specs:
        g = torch.Generator().manual_seed(seed)
        labels = (torch.rand(n, generator=g) < rate).float()
        labels[int(torch.randint(n, (), generator=g))] = 1.0  # at least one positive
        scores = torch.randn(n, generator=g) + 1.5 * labels  # distinct with probability 1
        cases.append((f"seeded case {seed}: {n} clips, {int(labels.sum())} positives", scores,
                      labels))
    return cases


def _mean_precision_at_every_rank(scores: Tensor, labels: Tensor) -> float:
    hits = labels[scores.argsort(descending=True)].cumsum(0)
    return float((hits / torch.arange(1, len(scores) + 1)).mean())


@checker()
def check_average_precision(
    average_precision_fn: Callable[[Tensor, Tensor], float], hidden: bool = False
) -> None:
    """``average_precision_fn(scores, labels)``: one class's AP as a Python float."""
    for case, scores, labels in _ap_cases(hidden):
        got = call_student(average_precision_fn, scores.clone(), labels.clone(), case=case)
        expected = average_precision(scores, labels)
        if isinstance(got, Tensor) and got.numel() == 1:
            got = got.item()
        if not isinstance(got, (int, float)):
            raise ExerciseError(
                f"average_precision on {case} returned a {type(got).__name__}; expected a number"
            )
        if math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-9):
            continue
        hint = ""
        if math.isclose(got, average_precision(-scores, labels), rel_tol=1e-6):
            hint = " -- it looks like the clips were ranked from the lowest score up"
        elif math.isclose(got, _mean_precision_at_every_rank(scores, labels), rel_tol=1e-6):
            hint = (" -- it looks like the precision was averaged over every rank; AP averages "
                    "it only at the ranks of the positive clips")
        raise ExerciseError(
            f"average_precision on {case} returned {got:.6g}, expected {expected:.6g}{hint}"
        )
    passed(7, 1, "your average precision equals ssast_teach.finetune.average_precision")


# ---------------------------------------------------------------------------- exercise 2


def _confusion_cases(hidden: bool) -> list[tuple[str, Tensor, Tensor]]:
    specs = [(711, 12, 3), (712, 40, 5)]  # (seed, N, C)
    if hidden:
        specs += [(713, 1, 4), (714, 300, 10)]
    cases = []
    for seed, n, c in specs:
        g = torch.Generator().manual_seed(seed)
        targets = nn.functional.one_hot(torch.randint(c, (n,), generator=g), c).float()  # (N, C)
        scores = torch.randn(n, c, generator=g) + 1.2 * targets  # (N, C) logits
        cases.append((f"seeded case {seed}: {n} clips, {c} classes", scores, targets))
    return cases


@checker()
def check_confusion(
    confusion: Callable[[Tensor, Tensor], Tensor], hidden: bool = False
) -> None:
    """``confusion(scores, targets)``: ``(C, C)`` int64 counts, rows true, columns predicted."""
    for case, scores, targets in _confusion_cases(hidden):
        got = call_student(confusion, scores.clone(), targets.clone(), case=case)
        expected = confusion_matrix(scores, targets)
        mistakes = [("rows and columns are swapped: rows are the true class (argmax of targets), "
                     "columns the predicted class (argmax of scores)", expected.T)]
        check_with_hints("confusion(scores, targets)", got, expected, mistakes, case=case)
    passed(7, 2, "your confusion matrix equals ssast_teach.finetune.confusion_matrix")


# ---------------------------------------------------------------------------- exercise 3


def _probe_model(seed: int, input_tdim: int) -> SSASTModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sd = SSASTModel.for_pretraining("mini", input_tdim=input_tdim).state_dict()
        return SSASTModel.for_finetuning(sd, n_classes=5, fstride=16, tstride=16, input_tdim=input_tdim)


@checker()
def check_linear_probe(
    freeze_for_linear_probe: Callable[[SSASTModel], list], hidden: bool = False
) -> None:
    """``freeze_for_linear_probe(model)``: freeze all but ``mlp_head``, return its parameters."""
    sizes = [(721, 32)] + ([(722, 64)] if hidden else [])
    for seed, tdim in sizes:
        model = _probe_model(seed, tdim)
        case = f"a mini fine-tuning model (seed {seed}, 5 classes)"
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
