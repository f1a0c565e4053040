"""Checkers for chapter 05 (the objectives): InfoNCE, the masked accuracy, the masked MSE.

The references are the library's :func:`ssast_teach.losses.info_nce_loss` and
:func:`ssast_teach.losses.mse_loss`. Wrong answers that equal a known mistake (the paper's
softmax dimension, the raw argmax, a sum instead of a mean, ...) are named in the message.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ssast_teach.exercises import call_student, check_with_hints, checker, passed
from ssast_teach.losses import info_nce_loss, mse_loss


def _nce_cases(hidden: bool) -> list[tuple[str, Tensor, Tensor]]:
    """Seeded ``(pred, target)`` pairs, ``(B, M, P)``: pred is a scaled, noisy copy of target,
    and the seeds are picked so that in every case the official accuracy lies strictly between
    0 and 1 and differs from the raw-argmax, row-argmax and paper forms (all four distinct)."""
    cases = [(509, (2, 6, 8)), (503, (3, 5, 4))]  # (seed, (B, M, P))
    if hidden:
        cases += [(590, (1, 9, 16)), (501, (4, 3, 2)), (500, (2, 12, 6))]
    out = []
    for seed, shape in cases:
        g = torch.Generator().manual_seed(seed)
        target = torch.randn(shape, generator=g)  # (B, M, P)
        scale = 0.5 + 2 * torch.rand(shape[0], shape[1], 1, generator=g)  # (B, M, 1)
        pred = scale * target + 1.2 * torch.randn(shape, generator=g)  # (B, M, P)
        pred = pred + 0.3 * torch.randn(shape[0], 1, shape[2], generator=g)  # a per-clip offset
        out.append((f"seeded case {seed} with pred, target of shape {shape}", pred, target))
    return out


def _scores(pred: Tensor, target: Tensor) -> Tensor:
    return target @ pred.transpose(1, 2)  # (B, M, M): S[b, i, j] = x_i . c_j


def _accuracy(winners: Tensor) -> Tensor:
    """Fraction of ``(B, M)`` winners that are their own patch (``winners[b, i] == i``)."""
    return (winners == torch.arange(winners.shape[-1])).float().mean()


@checker()
def check_info_nce(info_nce: Callable[[Tensor, Tensor], Tensor], hidden: bool = False) -> None:
    """``info_nce(pred, target)``: the official InfoNCE loss, a 0-d tensor."""
    for case, pred, target in _nce_cases(hidden):
        got = call_student(info_nce, pred.clone(), target.clone(), case=case)
        expected = info_nce_loss(pred, target)[1]
        s = _scores(pred, target)  # (B, M, M)
        diag = torch.log_softmax(s, -1).diagonal(dim1=-2, dim2=-1)  # (B, M)
        mistakes = [
            (
                "the paper's Eq. 1 (softmax over targets, dim=-2 of S = x @ c^T); the official "
                "code normalises each row over the predictions: log_softmax(S, dim=-1)",
                info_nce_loss(pred, target, softmax_quirk=False)[1],
            ),
            ("the minus sign is missing: the loss is -mean(log_softmax(S)[i, i])", diag.mean()),
            ("a sum instead of the mean over clips and masked patches", -diag.sum()),
            (
                "a mean over the whole log_softmax matrix instead of its diagonal",
                -torch.log_softmax(s, -1).mean(),
            ),
        ]
        name = getattr(info_nce, "__name__", "info_nce")  # the notebook calls it nce_loss
        check_with_hints(f"{name}(pred, target)", got, expected, mistakes, case=case)
    passed(5, 1, "your InfoNCE equals the official masked-patch classification loss")


@checker()
def check_masked_accuracy(
    masked_accuracy: Callable[[Tensor, Tensor], Tensor], hidden: bool = False
) -> None:
    """``masked_accuracy(pred, target)``: the official accuracy, a 0-d float tensor."""
    for case, pred, target in _nce_cases(hidden):
        got = call_student(masked_accuracy, pred.clone(), target.clone(), case=case)
        expected = info_nce_loss(pred, target)[0]
        s = _scores(pred, target)  # (B, M, M)
        mistakes = [
            (
                "the argmax of the raw S down each column; the official accuracy takes the softmax "
                "over each row first, then the argmax down each column (dim=0 of each clip)",
                _accuracy(s.argmax(dim=1)),
            ),
            (
                "the argmax along each row (dim=-1); the official argmax runs down each column "
                "(dim=0 of each clip's softmax(S, dim=-1))",
                _accuracy(s.argmax(dim=2)),
            ),
            (
                "the paper's softmax dimension (S transposed); the official code uses "
                "softmax(S, dim=-1) with S = x @ c^T",
                info_nce_loss(pred, target, softmax_quirk=False)[0],
            ),
        ]
        check_with_hints("masked_accuracy(pred, target)", got, expected, mistakes, case=case)
    passed(5, 2, "your masked-patch accuracy equals the official softmax-then-column-argmax")


@checker()
def check_masked_mse(
    masked_mse: Callable[[Tensor, Tensor, Tensor], Tensor], hidden: bool = False
) -> None:
    """``masked_mse(pred, patches, mask_ids)``: MSE between ``pred`` and the masked patches."""
    shapes = [(2, 12, 5, 4), (3, 20, 8, 6)]  # (B, N, M, P)
    if hidden:
        shapes += [(1, 512, 400, 256), (4, 7, 1, 3)]
    for seed, (b, n, m, p) in enumerate(shapes):
        g = torch.Generator().manual_seed(550 + seed)
        patches = torch.randn(b, n, p, generator=g)  # (B, N, P)
        mask_ids = torch.rand(b, n, generator=g).argsort(dim=1)[:, :m].sort(dim=1).values
        pred = torch.randn(b, m, p, generator=g)  # (B, M, P)
        case = f"seeded case {seed}: patches {(b, n, p)}, mask_ids {(b, m)}, pred {(b, m, p)}"
        got = call_student(masked_mse, pred.clone(), patches.clone(), mask_ids.clone(), case=case)
        target = patches.gather(1, mask_ids.unsqueeze(-1).expand(-1, -1, p))  # (B, M, P)
        expected = mse_loss(pred, target)
        mistakes = [
            (
                "the targets are the first M patches; pick each clip's masked ones with "
                "patches.gather(1, mask_ids[..., None].expand(-1, -1, P))",
                mse_loss(pred, patches[:, :m]),
            ),
            (
                "the targets are indexed with the first clip's mask_ids for every clip",
                mse_loss(pred, patches[:, mask_ids[0]]),
            ),
            ("a sum instead of the mean over every value", ((pred - target) ** 2).sum()),
            (
                "the mean of the per-patch sums; the official MSE averages every value",
                ((pred - target) ** 2).sum(-1).mean(),
            ),
        ]
        check_with_hints("masked_mse(pred, patches, mask_ids)", got, expected, mistakes, case=case)
    passed(5, 3, "your masked MSE equals the official reconstruction loss")
