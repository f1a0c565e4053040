"""The pooled log-mel statistics baseline: masked statistics, the logistic regression, and a
smoke run on the shipped data."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import DATA, needs
from ssast_teach.baselines import LogisticRegression, pooled_logmel_stats, pooled_stats_baseline
from ssast_teach.datasets import DataSplit, esc10, fsdd, make_synthetic_dataset
from ssast_teach.stats import compare


@pytest.fixture
def course_data():
    needs(DATA.is_dir(), "the course data folder data/", "it ships with the repository")


def _every(split: DataSplit, k: int) -> DataSplit:
    """Every ``k``-th clip: the lists are sorted by class, so each class keeps its share."""
    return DataSplit(split.name, split.items[::k], split.labels)


# --- pooled statistics --------------------------------------------------------------------------


def test_pooled_stats_equal_a_loop_over_real_frames():
    x = torch.randn(5, 20, 8) * 3 - 4  # (B, T, F)
    lengths = [1, 5, 20, 13, 7]
    got = pooled_logmel_stats(x, torch.tensor(lengths))
    assert got.shape == (5, 16)
    for i, n in enumerate(lengths):
        real = x[i, :n]  # (n, F)
        expected = torch.cat([real.mean(0), real.std(0, correction=0)])
        torch.testing.assert_close(got[i], expected)
    assert torch.equal(got[0, 8:], torch.zeros(8))  # one frame: no spread


def test_padding_is_never_read():
    x = torch.randn(3, 10, 4)
    lengths = torch.tensor([4, 10, 6])
    clean = pooled_logmel_stats(x, lengths)
    padded = torch.cat([x, torch.full((3, 7, 4), 1e6)], dim=1)  # (3, 17, 4): more padding
    padded[0, 4:] = float("nan")
    torch.testing.assert_close(pooled_logmel_stats(padded, lengths), clean)


@pytest.mark.parametrize(
    ("lengths", "match"),
    [([0, 3], r"in 1\.\.5"), ([3, 6], r"in 1\.\.5"), ([3], "2 integer frame counts"),
     ([2.0, 3.0], "2 integer frame counts")],
)
def test_pooled_stats_bad_lengths(lengths, match):
    with pytest.raises(ValueError, match=match):
        pooled_logmel_stats(torch.zeros(2, 5, 3), lengths)
    with pytest.raises(ValueError, match="fbanks"):
        pooled_logmel_stats(torch.zeros(5, 3), [1] * 5)


# --- logistic regression ------------------------------------------------------------------------


def _blobs(n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three well-separated Gaussian blobs in 5 dimensions, one feature constant."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0, 0, 0, 1], [8, 0, 0, 0, 1], [0, 8, 0, 0, 1]]) * 10
    y = torch.arange(3).repeat_interleave(n_per_class)
    x = centres[y] + torch.randn(len(y), 5, generator=gen) * torch.tensor([1, 1, 1, 1, 0.0])
    return x, y  # (3n, 5), (3n,)


def test_logistic_regression_separates_separable_data():
    x, y = _blobs(20, seed=0)
    x_test, y_test = _blobs(10, seed=1)
    model = LogisticRegression().fit(x, y)
    assert torch.equal(model.predict(x), y) and torch.equal(model.predict(x_test), y_test)
    p = model.predict_proba(x_test)
    assert p.shape == (30, 3) and p.dtype == torch.float64
    torch.testing.assert_close(p.sum(1), torch.ones(30, dtype=torch.float64))
    again = LogisticRegression().fit(x, y)  # deterministic: the same weights, bit for bit
    assert torch.equal(again.weight, model.weight) and torch.equal(again.bias, model.bias)
    shuffled = torch.randperm(len(y))
    other = LogisticRegression().fit(x[shuffled], y[shuffled])  # convex: order does not matter
    torch.testing.assert_close(other.predict_proba(x_test), p, atol=1e-4, rtol=0)


def test_logistic_regression_reaches_its_optimum():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(60, 4, generator=gen)
    y = (x[:, 0] + torch.randn(60, generator=gen) > 0).long() * 2  # overlapping; class 1 absent
    model = LogisticRegression(l2=1e-2).fit(x, y, n_classes=3)
    assert model.predict_proba(x).shape == (60, 3)
    w = model.weight.clone().requires_grad_(True)
    b = model.bias.clone().requires_grad_(True)
    a = (x.double() - model.mean) / model.std
    loss = F.cross_entropy(a @ w + b, y) + 1e-2 * (w**2).sum()
    loss.backward()
    assert float(w.grad.abs().max()) < 1e-5 and float(b.grad.abs().max()) < 1e-5


def test_logistic_regression_errors():
    x, y = _blobs(2, seed=0)
    with pytest.raises(RuntimeError, match="call fit"):
        LogisticRegression().predict(x)
    with pytest.raises(ValueError, match=r"x: expected features \(N, 5\)"):
        LogisticRegression().fit(x, y).predict(x[:, :3])
    with pytest.raises(ValueError, match="y: expected 6 integer class indices"):
        LogisticRegression().fit(x, y.double())
    with pytest.raises(ValueError, match=r"y: class indices must be in 0\.\.1"):
        LogisticRegression().fit(x, y, n_classes=2)
    with pytest.raises(ValueError, match="x: expected features"):
        LogisticRegression().fit(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="l2"):
        LogisticRegression(l2=-1.0)


# --- the baseline on clips ----------------------------------------------------------------------


@pytest.fixture
def synthetic(tmp_path):
    return make_synthetic_dataset(tmp_path / "synth", n_per_class=4, seconds=0.5, seed=0)


def test_baseline_scores_the_test_split_clip_by_clip(synthetic, tmp_path):
    train = DataSplit("train", synthetic.items[0::2], synthetic.labels)
    test = DataSplit("test", synthetic.items[1::2], synthetic.labels)
    result = pooled_stats_baseline(train, test, target_length=30, cache_dir=tmp_path / "cache")
    assert result.accuracy == 1.0 and result.n_train == 8 and result.test_name == "test"
    index = test.label_index()
    assert result.targets.tolist() == [index[item["labels"]] for item in test.items]
    assert result.correct.dtype == np.int8 and result.correct.shape == (8,)
    assert np.array_equal(result.correct, (result.predictions == result.targets).astype(np.int8))
    assert compare(result.correct, result.correct, name_a="a", name_b="b").diff == 0
    threads = torch.get_num_threads()
    uncached = pooled_stats_baseline(train, test, target_length=30, cache=False)
    assert np.array_equal(uncached.predictions, result.predictions)
    assert torch.get_num_threads() == threads  # run on one thread, then restored


def test_baseline_input_errors(synthetic):
    other = DataSplit("other", synthetic.items, synthetic.labels[:3])
    with pytest.raises(ValueError, match="share one label table"):
        pooled_stats_baseline(synthetic, other, cache=False)
    multi = DataSplit("multi", [{"wav": synthetic.items[0]["wav"],
                                 "labels": "/synthetic/chirp,/synthetic/noise"}], synthetic.labels)
    with pytest.raises(ValueError, match="one label of split 'multi' per clip"):
        pooled_stats_baseline(synthetic, multi, cache=False)
    with pytest.raises(ValueError, match="both need clips"):
        pooled_stats_baseline(synthetic, DataSplit("empty", [], synthetic.labels), cache=False)
    with pytest.raises(ValueError, match="target_length"):
        pooled_stats_baseline(synthetic, synthetic, target_length=0, cache=False)


def test_baseline_on_fsdd_is_well_above_chance(course_data, tmp_path):
    # Every 6th train and every 2nd test recording (300 and 100 clips), fbanks cached in tmp.
    result = pooled_stats_baseline(_every(fsdd("train"), 6), _every(fsdd("test"), 2),
                                   cache_dir=tmp_path)
    assert result.accuracy > 0.7  # chance 0.1; 0.94 measured


def test_baseline_on_esc10_fold1_is_well_above_chance(course_data, tmp_path):
    # 8 clips per class from folds 2-5, 4 per class of fold 1 (80 and 40 clips).
    result = pooled_stats_baseline(_every(esc10([2, 3, 4, 5]), 4), _every(esc10([1]), 2),
                                   cache_dir=tmp_path)
    assert result.accuracy > 0.4  # chance 0.1; 0.7 measured
