"""Chapter 05: the InfoNCE (mpc), MSE (mpg) and joint losses on hand-computed examples."""

import math

import numpy as np
import pytest
import torch

from ssast_teach.losses import MSE_WEIGHT, info_nce_loss, joint_loss, mse_loss


def from_scores(scores):
    """pred/target with ``target @ pred^T == scores``: targets are the unit vectors."""
    s = torch.tensor(scores, dtype=torch.float64)
    m = s.shape[-1]
    target = torch.eye(m, dtype=torch.float64).expand(s.shape[0], m, m)  # x_i = e_i
    return s.transpose(1, 2).contiguous(), target  # c_j = column j of S


def numpy_official(pred, target):
    """The official per-clip loop, restated in numpy (issue #13's softmax dimension)."""
    nce, correct = 0.0, 0
    b, m, _ = pred.shape
    for k in range(b):
        s = target[k] @ pred[k].T  # s[i, j] = x_i . c_j
        log_sm = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
        correct += int((np.exp(log_sm).argmax(axis=0) == np.arange(m)).sum())
        nce += np.trace(log_sm)
    return correct / (b * m), -nce / (b * m)


def test_two_patches_by_hand():
    # x1 = (1, 0), x2 = (0, 1); c1 = (2, 0), c2 = (1, 1) -> S = [[2, 1], [0, 1]]
    target = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    pred = torch.tensor([[[2.0, 0.0], [1.0, 1.0]]])
    acc, nce = info_nce_loss(pred, target)
    # both diagonal entries are one unit above the other entry of their row
    assert nce.item() == pytest.approx(math.log(1 + math.exp(-1)))
    assert acc.item() == 1.0


def test_accuracy_is_column_argmax_of_row_softmax_not_of_raw_scores():
    scores = [[[10.0, 9.0], [0.0, 1.0]]]
    pred, target = from_scores(scores)
    acc, nce = info_nce_loss(pred, target)
    # raw S: column 1's largest entry is row 0 (9 > 1), so a raw argmax would score 1/2 ...
    raw = torch.tensor(scores).argmax(dim=1) == torch.arange(2)
    assert raw.float().mean().item() == 0.5
    # ... but after the row softmax both rows are (0.73, 0.27)/(0.27, 0.73): 2/2 correct
    assert acc.item() == 1.0
    assert nce.item() == pytest.approx(math.log(1 + math.exp(-1)))


def test_corrected_softmax_normalises_each_prediction_over_targets():
    scores = [[[10.0, 9.0], [0.0, 1.0]]]
    pred, target = from_scores(scores)
    acc, nce = info_nce_loss(pred, target, softmax_quirk=False)
    # S^T = [[10, 0], [9, 1]]: -log p = log(1 + e^-10) and 8 + log(1 + e^-8)
    expected = (math.log(1 + math.exp(-10)) + 8 + math.log(1 + math.exp(-8))) / 2
    assert nce.item() == pytest.approx(expected)
    # softmax rows of S^T: (1 - 5e-5, 5e-5), (1 - 3e-4, 3e-4): each column peaks on its row
    assert acc.item() == 1.0


def test_three_patches_two_clips_match_numpy_loop():
    rng = np.random.default_rng(0)
    pred, target = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 3, 4))
    acc, nce = info_nce_loss(torch.from_numpy(pred), torch.from_numpy(target))
    ref_acc, ref_nce = numpy_official(pred, target)
    assert acc.item() == pytest.approx(ref_acc)
    assert nce.item() == pytest.approx(ref_nce)
    paper_acc, paper_nce = info_nce_loss(
        torch.from_numpy(pred), torch.from_numpy(target), softmax_quirk=False
    )
    # paper form == official form with the roles of pred and target swapped
    ref_acc, ref_nce = numpy_official(target, pred)
    assert (paper_acc.item(), paper_nce.item()) == pytest.approx((ref_acc, ref_nce))


def test_nce_backpropagates_into_pred_only():
    pred = torch.randn(2, 5, 8, requires_grad=True)
    target = torch.randn(2, 5, 8)
    _, nce = info_nce_loss(pred, target)
    nce.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()


def test_shape_errors():
    with pytest.raises(ValueError, match="pred and target"):
        info_nce_loss(torch.zeros(2, 3, 4), torch.zeros(2, 3, 5))
    with pytest.raises(ValueError, match="same shape"):
        mse_loss(torch.zeros(2, 3), torch.zeros(3, 2))


def test_mse_and_joint():
    pred = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    target = torch.tensor([[[1.0, 0.0], [0.0, 4.0]]])
    assert mse_loss(pred, target).item() == pytest.approx((0 + 4 + 9 + 0) / 4)
    assert MSE_WEIGHT == 10.0
    assert joint_loss(torch.tensor(1.0), torch.tensor(0.5)).item() == pytest.approx(6.0)
    assert joint_loss(torch.tensor(1.0), torch.tensor(0.5), mse_weight=0.0).item() == 1.0
