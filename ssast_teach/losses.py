"""Chapter 05, losses: the two SSAST pretraining objectives, as pure functions of tensors.

* Discriminative, masked patch classification (mpc): :func:`info_nce_loss`. Each masked
  patch's prediction must pick out its own patch among the clip's other masked patches.
* Generative, masked patch reconstruction (mpg): :func:`mse_loss`.
* Joint: :func:`joint_loss`, ``nce + 10 * mse`` in the official recipe.

Shapes: ``B`` clips, ``M`` masked patches per clip, ``P = fshape*tshape`` values per patch.
"""

from __future__ import annotations

import torch
from torch import Tensor

MSE_WEIGHT = 10.0  # official weight of the generative loss in the joint objective


def info_nce_loss(
    pred: Tensor, target: Tensor, *, softmax_quirk: bool = True
) -> tuple[Tensor, Tensor]:
    """InfoNCE over the masked patches of each clip: returns ``(acc, nce)``, two 0-d tensors.

    ``pred`` are the predictions ``c_j = cpredlayer(h_j)`` and ``target`` the raw patches
    ``x_i``, both ``(B, M, P)``. Per clip ``S[i, j] = x_i . c_j`` (no temperature).

    Official (``softmax_quirk=True``, the default): ``nce = -mean over clips and i of log_softmax(S, dim=-1)[i, i]``: each
    *target* row is normalised over all *predictions*. ``acc`` is the fraction of ``i`` with
    ``argmax(softmax(S, dim=-1), dim=0)[i] == i``: softmax over each row first, then the
    argmax down each column, which is not the argmax of the raw ``S``.

    ``softmax_quirk=False`` follows the paper's Eq. 1 instead: each *prediction* ``c_i`` is
    normalised over all *targets* ``x_j``, i.e. the same two formulas applied to ``S``
    transposed (``S'[i, j] = c_i . x_j``), for both the loss and the accuracy.
    """
    if pred.dim() != 3 or pred.shape != target.shape:
        raise ValueError(
            "info_nce_loss: pred and target must both be (B, M, P), got "
            f"{tuple(pred.shape)} and {tuple(target.shape)}"
        )
    scores = target @ pred.transpose(1, 2)  # (B, M, M): scores[b, i, j] = x_i . c_j
    # Official quirk: softmax over predictions (dim -1 of x @ c^T); the paper's Eq. 1 normalises
    # over targets (official repo issue #13). softmax_quirk=False gives the paper's form.
    if not softmax_quirk:
        scores = scores.transpose(1, 2)  # (B, M, M): scores[b, i, j] = c_i . x_j
    m = scores.shape[-1]
    nce = -torch.log_softmax(scores, dim=-1).diagonal(dim1=-2, dim2=-1).mean()
    winners = torch.softmax(scores, dim=-1).argmax(dim=1)  # (B, M): argmax down each column
    acc = (winners == torch.arange(m, device=scores.device)).float().mean()
    return acc, nce


def mse_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over every value of every masked patch: ``mean((pred - target)^2)``."""
    if pred.shape != target.shape:
        raise ValueError(
            f"mse_loss: pred and target must have the same shape, got {tuple(pred.shape)} "
            f"and {tuple(target.shape)}"
        )
    return torch.mean((pred - target) ** 2)


def joint_loss(nce: Tensor, mse: Tensor, mse_weight: float = MSE_WEIGHT) -> Tensor:
    """The joint pretraining loss ``nce + mse_weight * mse`` (official ``mse_weight`` 10)."""
    return nce + mse_weight * mse
