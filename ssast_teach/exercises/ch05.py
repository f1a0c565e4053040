"""Checkers for chapter 05 (the objectives): the batched InfoNCE with its accuracy, the masked
MSE, and a cosine InfoNCE (an extension, checked by properties).

The references are the library's :func:`ssast_teach.losses.info_nce_loss` and
:func:`ssast_teach.losses.mse_loss`. Wrong answers that equal a known mistake (the paper's
softmax dimension, the raw argmax, a sum instead of a mean, ...) are named in the message.
The cosine InfoNCE has no library version: any right answer has the properties checked here
(a closed form at perfect prediction, invariance to each patch's scale, bounds, agreement with
a loop over clips and patches).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ssast_teach.exercises import (
    ExerciseError,
    call_student,
    check_tensor,
    check_with_hints,
    checker,
    hidden_seed,
    passed,
)
from ssast_teach.losses import info_nce_loss, mse_loss

__all__ = ["check_cosine_info_nce", "check_info_nce", "check_masked_mse"]


def _info_nce(c: Tensor, x: Tensor, softmax_quirk: bool = True) -> tuple[Tensor, Tensor]:
    """The chapter's signature for the library's ``info_nce_loss``: ``(acc, nce)``."""
    return info_nce_loss(c, x, softmax_quirk=softmax_quirk)


def _masked_mse(pred: Tensor, patches: Tensor, mask_ids: Tensor) -> Tensor:
    """``mse_loss`` against each clip's masked patches, picked by ``mask_ids`` (B, M)."""
    target = patches.gather(1, mask_ids.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
    return mse_loss(pred, target)  # target (B, M, P)


# ---------------------------------------------------------------------- exercise 1


def _noisy_pair(seed: int, shape: tuple[int, int, int]) -> tuple[Tensor, Tensor]:
    """``(pred, target)``, ``(B, M, P)``: pred a scaled, noisy copy of target with a per-clip
    offset, so that the accuracy lies between 0 and 1 and the loud rows differ."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(shape, generator=g)  # (B, M, P)
    scale = 0.5 + 2 * torch.rand(shape[0], shape[1], 1, generator=g)  # (B, M, 1)
    pred = scale * target + 1.2 * torch.randn(shape, generator=g)  # (B, M, P)
    pred = pred + 0.3 * torch.randn(shape[0], 1, shape[2], generator=g)  # (B, M, P)
    return pred, target


def _nce_cases(hidden: bool) -> list[tuple[str, Tensor, Tensor]]:
    """Seeded ``(pred, target)`` pairs. The visible seeds are picked so that the official
    accuracy lies strictly between 0 and 1 and differs from the raw-argmax, row-argmax and
    paper forms (all four distinct); the hidden ones come from the grader's seed."""
    cases = [(509, (2, 6, 8)), (503, (3, 5, 4)), (7, (2, 1, 3))]  # (seed, (B, M, P)); M = 1
    if hidden:
        g = torch.Generator().manual_seed(hidden_seed(5100))
        for _ in range(4):
            b, m, p = (int(torch.randint(lo, hi, (1,), generator=g)) for lo, hi in ((1, 5), (2, 13), (2, 17)))
            cases.append((int(torch.randint(10_000, (1,), generator=g)), (b, m, p)))
    out = []
    for seed, shape in cases:
        pred, target = _noisy_pair(seed, shape)
        out.append((f"seeded case {seed} with pred, target of shape {shape}", pred, target))
    return out


def _accuracy(winners: Tensor) -> Tensor:
    """Fraction of ``(B, M)`` winners that are their own patch (``winners[b, i] == i``)."""
    return (winners == torch.arange(winners.shape[-1])).float().mean()


def _nce_mistakes(s: Tensor, official: tuple[Tensor, Tensor] | None) -> tuple[list, list]:
    """(mistakes on acc, mistakes on nce) for the score matrix ``s`` of the asked form;
    ``official`` is the default form's (acc, nce) when the paper form was asked."""
    log_sm = torch.log_softmax(s, -1)  # (B, M, M)
    diag = log_sm.diagonal(dim1=-2, dim2=-1)  # (B, M)
    acc = [
        (
            "the argmax of the raw S down each column; the official accuracy takes the softmax "
            "over each row first, then the argmax down each column (dim=1 of (B, M, M))",
            _accuracy(s.argmax(dim=1)),
        ),
        (
            "the argmax along each row (dim=-1); the official argmax runs down each column "
            "(dim=1 of softmax(S, dim=-1), which is (B, M, M))",
            _accuracy(torch.softmax(s, -1).argmax(dim=2)),
        ),
    ]
    nce = [
        ("the minus sign is missing: the loss is -mean(log_softmax(S)[i, i])", diag.mean()),
        ("a sum instead of the mean over clips and masked patches", -diag.sum()),
        (
            "a mean over the whole log_softmax matrix instead of its diagonal",
            -log_sm.mean(),
        ),
        (
            "the softmax runs down the columns (dim=1): that is the other form; with "
            "S = x @ c^T the official form is log_softmax(S, dim=-1)",
            -torch.log_softmax(s, 1).diagonal(dim1=-2, dim2=-1).mean(),
        ),
    ]
    if official is not None:
        hint = "softmax_quirk=False gives the official form: transpose S when it is False"
        acc.append((hint, official[0]))
        nce.append((hint, official[1]))
    return acc, nce


def _acc_nce(got: Any, name: str, case: str, expected: tuple[Tensor, Tensor]) -> tuple[Any, Any]:
    if not isinstance(got, tuple | list) or len(got) != 2:
        raise ExerciseError(f"{name} on {case} should return a pair (acc, nce), got {type(got).__name__}")
    acc, nce = got
    if (
        isinstance(acc, Tensor)
        and acc.shape == ()
        and torch.allclose(acc.double(), expected[1].double(), atol=1e-5)
        and not torch.allclose(acc.double(), expected[0].double(), atol=1e-5)
    ):
        raise ExerciseError(f"{name} on {case} returns (nce, acc); the order is (acc, nce)")
    return acc, nce


@checker(reference=_info_nce)
def check_info_nce(
    info_nce: Callable[..., tuple[Tensor, Tensor]], hidden: bool = False
) -> None:
    """``info_nce(c, x, softmax_quirk=True) -> (acc, nce)``: the official accuracy and InfoNCE
    (and the paper's with ``softmax_quirk=False``), two 0-d float tensors."""
    name = getattr(info_nce, "__name__", "info_nce")
    for case, pred, target in _nce_cases(hidden):
        official = info_nce_loss(pred, target)
        for quirk in (True, False):
            what = f"{case}, softmax_quirk={quirk}"
            expected = info_nce_loss(pred, target, softmax_quirk=quirk)
            got = call_student(info_nce, pred.clone(), target.clone(), softmax_quirk=quirk, case=what)
            acc, nce = _acc_nce(got, f"{name}(c, x)", what, expected)
            s = target @ pred.transpose(1, 2)  # (B, M, M): s[b, i, j] = x_i . c_j
            s = s if quirk else s.transpose(1, 2)
            acc_mistakes, nce_mistakes = _nce_mistakes(s, None if quirk else official)
            if not quirk:
                nce_mistakes = nce_mistakes[:3] + nce_mistakes[4:]  # dim=1 IS the paper form
            check_with_hints(f"the nce of {name}", nce, expected[1], nce_mistakes, case=what)
            check_with_hints(f"the acc of {name}", acc, expected[0], acc_mistakes, case=what)
        default = call_student(info_nce, pred.clone(), target.clone(), case=case)
        check_tensor(f"the nce of {name} with the default softmax_quirk", default[1], official[1], case=case)
    passed(5, 1, "info_nce gives the official accuracy and InfoNCE, and the paper's with softmax_quirk=False")


# ---------------------------------------------------------------------- exercise 2


@checker(reference=_masked_mse)
def check_masked_mse(
    masked_mse: Callable[[Tensor, Tensor, Tensor], Tensor], hidden: bool = False
) -> None:
    """``masked_mse(pred, patches, mask_ids)``: MSE between ``pred`` and the masked patches."""
    shapes = [(2, 12, 5, 4), (3, 20, 8, 6), (2, 6, 1, 3)]  # (B, N, M, P)
    if hidden:
        g = torch.Generator().manual_seed(hidden_seed(5200))
        shapes += [(1, 128, 100, 256)]
        for _ in range(3):
            b, n, p = (int(torch.randint(lo, hi, (1,), generator=g)) for lo, hi in ((2, 5), (2, 40), (1, 9)))
            shapes.append((b, n, int(torch.randint(1, n + 1, (1,), generator=g)), p))
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
            ("the square root of the MSE (an RMSE)", ((pred - target) ** 2).mean().sqrt()),
        ]
        check_with_hints("masked_mse(pred, patches, mask_ids)", got, expected, mistakes, case=case)
    passed(5, 2, "your masked MSE equals the official reconstruction loss")


# ---------------------------------------------------------------------- exercise 3


def _cosine_loop(pred: Tensor, target: Tensor, tau: float) -> Tensor:
    """The cosine InfoNCE by its definition, one clip and one target patch at a time."""
    terms = []
    for b in range(pred.shape[0]):
        for i in range(pred.shape[1]):
            row = torch.stack([F.cosine_similarity(target[b, i], c, dim=0) for c in pred[b]]) / tau
            terms.append(-(row[i] - torch.logsumexp(row, 0)))
    return torch.stack(terms).mean()


def _cosine_value(got: Any, name: str, case: str) -> Tensor:
    if not isinstance(got, Tensor) or got.dim() != 0 or not got.is_floating_point():
        shape = tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__
        raise ExerciseError(f"{name} on {case} should be a 0-d float tensor, got {shape}")
    if not bool(torch.isfinite(got)):
        raise ExerciseError(f"{name} on {case} is {got.item()}: normalise with F.normalize (it "
                            "guards against a zero norm) and use log_softmax, not log(softmax)")
    return got


@checker()
def check_cosine_info_nce(
    cosine_info_nce: Callable[[Tensor, Tensor, float], Tensor], hidden: bool = False
) -> None:
    """``cosine_info_nce(pred, target, tau)``: InfoNCE on ``S[i, j] = cos(x_i, c_j) / tau``,
    each target row over the predictions (the official direction), a 0-d tensor."""
    name = "cosine_info_nce(pred, target, tau)"
    g = torch.Generator().manual_seed(hidden_seed(5300) if hidden else 5300)
    shapes = [(2, 6, 8, 0.1), (3, 4, 5, 1.0), (1, 1, 3, 0.5)]  # (B, M, P, tau); M = 1: loss 0
    if hidden:
        for _ in range(4):
            b, m, extra = (int(torch.randint(lo, hi, (1,), generator=g)) for lo, hi in ((1, 4), (1, 10), (0, 8)))
            shapes.append((b, m, m + extra, round(0.05 + torch.rand(1, generator=g).item(), 3)))
    for b, m, p, tau in shapes:
        case = f"B={b}, M={m}, P={p}, tau={tau}"
        # perfect predictions of orthogonal patches at random loudness: a closed form
        basis = torch.linalg.qr(torch.randn(b, p, p, generator=g)).Q[..., :m]  # (B, P, M)
        target = basis.transpose(1, 2) * (0.1 + 5 * torch.rand(b, m, 1, generator=g))  # (B, M, P)
        pred = target * (0.1 + 5 * torch.rand(b, m, 1, generator=g))  # (B, M, P)
        got = _cosine_value(call_student(cosine_info_nce, pred, target, tau, case=case), name, case)
        best = math.log(1 + (m - 1) * math.exp(-1 / tau))
        if abs(got.item() - best) > 1e-4 * max(1.0, best):
            known = {
                "tau is not used: divide every cosine by tau": math.log(1 + (m - 1) * math.exp(-1)),
                "the cosines are multiplied by tau; divide them by tau": math.log(
                    1 + (m - 1) * math.exp(-tau)
                ),
                "the minus sign is missing": -best,
            }
            hints = [hint for hint, value in known.items() if m > 1 and abs(got.item() - value) < 1e-4]
            raise ExerciseError(
                f"{name} is {got.item():.6g} on {case} with every prediction pointing at its own "
                f"patch and the patches orthogonal; it must be log(1 + (M-1) exp(-1/tau)) = "
                f"{best:.6g}: each score is cos / tau (1/tau on the diagonal, 0 elsewhere), "
                "whatever the patches' loudness" + (f" -- it looks like {hints[0]}" if hints else "")
            )
        # noisy predictions: scale invariance, bounds, then the definition itself
        pred, target = _noisy_pair(int(torch.randint(10_000, (1,), generator=g)), (b, m, p))
        got = _cosine_value(call_student(cosine_info_nce, pred, target, tau, case=case), name, case)
        louder = (
            pred * (0.1 + 10 * torch.rand(b, m, 1, generator=g)),
            target * (0.1 + 10 * torch.rand(b, m, 1, generator=g)),
        )
        scaled = _cosine_value(call_student(cosine_info_nce, *louder, tau, case=case), name, case)
        if not torch.allclose(scaled.double(), got.double(), atol=1e-5, rtol=1e-4):
            raise ExerciseError(
                f"{name} changes from {got.item():.6g} to {scaled.item():.6g} on {case} when each "
                "target patch and each prediction is multiplied by its own positive factor; a "
                "cosine ignores length: normalise every patch vector along P (dim=-1), both "
                "pred and target"
            )
        low, high = math.log(1 + (m - 1) * math.exp(-2 / tau)), math.log(1 + (m - 1) * math.exp(2 / tau))
        if not low - 1e-5 <= got.item() <= high + 1e-5:
            raise ExerciseError(
                f"{name} is {got.item():.6g} on {case}, outside [{low:.4g}, {high:.4g}], the range "
                "any cosine InfoNCE must stay in (cosines lie in [-1, 1])"
            )
        expected = _cosine_loop(pred, target, tau)
        xn, cn = F.normalize(target, dim=-1), F.normalize(pred, dim=-1)
        s = xn @ cn.transpose(1, 2) / tau  # (B, M, M)
        mistakes = [
            (
                "each prediction is normalised over the targets (softmax down the columns, the "
                "paper's direction); normalise each target's row over the predictions (dim=-1)",
                -torch.log_softmax(s, 1).diagonal(dim1=-2, dim2=-1).mean(),
            ),
            ("the minus sign is missing", torch.log_softmax(s, -1).diagonal(dim1=-2, dim2=-1).mean()),
        ]
        check_with_hints(name, got, expected, mistakes, case=case, atol=1e-5, rtol=1e-4)
    what = "hidden cases" if hidden else "closed form, scale invariance, bounds and a loop"
    passed(5, 3, f"cosine_info_nce has every property of a cosine InfoNCE ({what})")
