"""Chapter 07 fine-tuning conventions against the official code's semantics, restated here.

The official ``src/traintest.py`` (train, validate, validate_wa), ``src/run.py`` and
``src/finetune/esc50/get_esc_result.py`` decide what a fine-tuning run reports. Each ``official_*``
function below restates one of those rules in a few plain lines over per-epoch states or
metrics; each test runs ``finetune`` at ci scale (a second or less), records what the official
code would have seen (the epoch-end models, the logits, the labels) and checks the library's
reported model and numbers against the restatement.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ssast_teach import finetune as ft
from ssast_teach.checkpoints import load_state_dict
from ssast_teach.datasets import DataSplit, FbankDataset, make_synthetic_dataset
from ssast_teach.finetune import FinetuneConfig, finetune, finetune_folds, mean_average_precision
from ssast_teach.model import SSASTModel
from ssast_teach.training import load_train_checkpoint

# ---------------------------------------------------------------- the official rules, restated


def official_weight_average(states: dict[int, dict], wa_start: int, wa_end: int) -> dict:
    """validate_wa(): load audio_model.{wa_start}.pth, add audio_model.{e}.pth for e in
    wa_start+1..wa_end, divide every tensor by the number of models."""
    average = {k: v.clone() for k, v in states[wa_start].items()}
    count = 1
    for epoch in range(wa_start + 1, wa_end + 1):
        for k in average:
            average[k] = average[k] + states[epoch][k]
        count += 1
    return {k: v / float(count) for k, v in average.items()}


def official_best_epoch(metric_per_epoch: list[float]) -> int:
    """train(): ``if acc > best_acc: best_acc = acc; best_epoch = epoch`` (or mAP), from -inf:
    strictly greater, so a tie keeps the earlier epoch. 1-based, like the official epoch."""
    best, best_epoch = -np.inf, 0
    for epoch, value in enumerate(metric_per_epoch, start=1):
        if value > best:
            best, best_epoch = value, epoch
    return best_epoch


def official_ce_target(labels: torch.Tensor) -> torch.Tensor:
    """train()/validate(): ``torch.argmax(labels.long(), axis=1)``. ``.long()`` truncates every
    entry below 1 to 0, so a mix of two different classes (lam, 1 - lam) becomes all zeros and
    its target class 0; a mix of one class with itself sums to 1 and keeps its class.
    The official dataloader sums the mixed label in float64 and stores float32, so a same-class
    mix is exactly 1.0; the library's float32 sum can land one ulp below, hence the rounding."""
    return torch.argmax(labels.double().round(decimals=6).long(), dim=1)


def train_loss(logits: torch.Tensor, labels: torch.Tensor, ce_target_quirk: bool) -> torch.Tensor:
    """The CE training loss of one batch: official (quirk) CE on ``official_ce_target``, else CE
    on the soft (possibly mixed) label distribution."""
    if ce_target_quirk:
        return nn.functional.cross_entropy(logits, official_ce_target(labels))
    return nn.functional.cross_entropy(logits, labels)


def official_valid_loss(batches: list[tuple[torch.Tensor, torch.Tensor]], loss: str,
                        valid_loss_quirk: bool) -> float:
    """validate(): per batch of the val loader (batch_size * 2), ``audio_output =
    torch.sigmoid(audio_output)`` then the loss function on it (quirk; else on the logits);
    the reported loss is ``np.mean(A_loss)``, the mean of the per-batch losses."""
    losses = []
    for logits, labels in batches:
        out = torch.sigmoid(logits) if valid_loss_quirk else logits
        if loss == "CE":
            losses.append(float(nn.functional.cross_entropy(out, official_ce_target(labels))))
        else:
            losses.append(float(nn.functional.binary_cross_entropy_with_logits(out, labels)))
    return float(np.mean(losses))


def official_scores(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """calculate_stats() on ``sigmoid(logits)``: accuracy of argmax vs argmax, mAP the mean of
    the per-class average precision (computed here by the library's sklearn-equivalent AP)."""
    out = torch.sigmoid(logits)
    return {"acc": float((out.argmax(1) == labels.argmax(1)).double().mean()),
            "mAP": mean_average_precision(out, labels)}


def official_esc_summary(curves: list[list[float]]) -> dict:
    """get_esc_result.py: add the folds' result.csv (rows epochs), divide by the number of folds,
    ``best_epoch = np.argmax(result[:, 0])`` (the first on ties), then each fold's value at that
    epoch and their mean."""
    cum = np.zeros(len(curves[0]))
    for curve in curves:
        cum = cum + np.array(curve)
    best = int(np.argmax(cum / len(curves)))
    fold = [curve[best] for curve in curves]
    return {"best_epoch": best + 1, "fold": fold, "mean": float(np.mean(fold))}


# ---------------------------------------------------------------- recording a run


class EpochModels:
    """A ``finetune`` callback that keeps every epoch-end model, as the official code saves
    ``audio_model.{epoch}.pth``: the run writes ``train_state.pt`` at each epoch's end, after
    that epoch's row reached the callback; :meth:`finish` reads the last one after the run."""

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / "train_state.pt"
        self.states: dict[int, dict] = {}

    def _read(self) -> None:
        if self.path.is_file():
            payload = load_train_checkpoint(self.path)
            self.states[payload["state"]["epoch"]] = payload["model"]

    def __call__(self, row: dict) -> None:
        if row["kind"] == "epoch":  # the file holds the previous epoch's end
            self._read()

    def finish(self) -> dict[int, dict]:
        self._read()
        return self.states


class Recording:
    """What the model saw: logits (and inputs) of every forward, training steps and evaluation
    batches apart, and the label of every item the datasets returned, in order."""

    def __init__(self):
        self.train_logits: list[torch.Tensor] = []  # one (B, C) per training step
        self.eval_logits: list[torch.Tensor] = []  # one (b, C) per evaluation batch
        self.eval_inputs: list[torch.Tensor] = []
        self.train_labels: list[torch.Tensor] = []  # one (C,) per item
        self.eval_labels: list[torch.Tensor] = []

    def train_batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        sizes = [len(x) for x in self.train_logits]
        labels = torch.stack(self.train_labels).split(sizes)
        return list(zip(self.train_logits, labels, strict=True))

    def eval_batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        sizes = [len(x) for x in self.eval_logits]
        labels = torch.stack(self.eval_labels).split(sizes)
        return list(zip(self.eval_logits, labels, strict=True))


@pytest.fixture
def recording(monkeypatch):
    rec = Recording()

    def hook(module, args, output):
        if isinstance(module, SSASTModel):
            if module.training:
                rec.train_logits.append(output.detach().float().clone())
            else:
                rec.eval_logits.append(output.detach().float().clone())
                rec.eval_inputs.append(args[0].detach().clone())

    original = FbankDataset.__getitem__

    def getitem(self, i):
        x, y = original(self, i)
        (rec.train_labels if self.training else rec.eval_labels).append(y.clone())
        return x, y

    monkeypatch.setattr(FbankDataset, "__getitem__", getitem)
    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    yield rec
    handle.remove()


def _ci(**overrides) -> FinetuneConfig:
    return FinetuneConfig.preset("synthetic", "ci", **{"precision": "fp32", **overrides})


def _run(config: FinetuneConfig, out_dir: Path):
    models = EpochModels(out_dir)
    model, history, results = finetune(config, out_dir=out_dir, callback=models)
    states = models.finish()
    assert sorted(states) == list(range(1, config.epochs + 1))
    return model, history, results, states


def _assert_state_equal(got: dict, want: dict, atol: float = 0.0) -> None:
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key].float(), want[key].float(), atol=atol, rtol=0,
                                   msg=key)


# ---------------------------------------------------------------- the restatements themselves


def test_restatements_on_known_curves():
    assert official_best_epoch([0.25, 0.5, 0.5, 0.25]) == 2  # a tie keeps the earlier epoch
    assert official_best_epoch([0.5, 0.5]) == 1
    states = {e: {"w": torch.full((2,), float(e))} for e in range(1, 6)}
    assert official_weight_average(states, 2, 4)["w"].tolist() == [3.0, 3.0]
    mixed = torch.tensor([[0.3, 0.7, 0.0], [0.0, 0.45, 0.55], [0.0, 0.0, 1.0]])
    assert official_ce_target(mixed).tolist() == [0, 0, 2]  # two-class mixes train class 0
    same_class = torch.tensor([[0.0, 1.0 - 2**-24, 0.0]])  # float32 sum one ulp below 1
    assert official_ce_target(same_class).tolist() == [1]
    s = official_esc_summary([[0.5, 1.0], [1.0, 0.25]])
    assert s == {"best_epoch": 1, "fold": [0.5, 1.0], "mean": 0.75}


# ---------------------------------------------------------------- weight averaging


def test_weight_average_is_the_mean_of_the_epoch_end_models(tmp_path, recording):
    config = _ci(epochs=4, wa=True, wa_start=2, wa_end=3)
    model, _, results, states = _run(config, tmp_path)
    want = official_weight_average(states, 2, 3)
    _assert_state_equal(model.state_dict(), want, atol=1e-6)
    _assert_state_equal(load_state_dict(tmp_path / "finetuned.pth"), want, atol=1e-6)
    # the window is epochs 2..3 only: epochs 1 and 4 are not in it
    w = "mlp_head.1.weight"
    assert not torch.allclose(want[w], (states[1][w] + states[2][w] + states[3][w]) / 3)
    assert not torch.allclose(want[w], states[4][w])
    assert results["selection"] == "weight average of epochs 2-3"
    # the reported test numbers are the averaged model's: its logits on the test clips
    final = recording.eval_batches()[-1:]  # 4 test clips, eval batch 8: one batch
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(recording.eval_inputs[-1]), final[0][0])
    logits, labels = final[0]
    assert results["test"]["acc"] == pytest.approx(official_scores(logits, labels)["acc"])
    assert results["test"]["mAP"] == pytest.approx(official_scores(logits, labels)["mAP"])
    assert results["test"]["loss"] == pytest.approx(official_valid_loss(final, "CE", True))


# ---------------------------------------------------------------- choosing the reported epoch


def _own_data_with_validation(tmp_path: Path) -> dict:
    """Synthetic clips as official datafiles: 2 train, 1 validation, 1 test clip per class."""
    every = make_synthetic_dataset(tmp_path / "syn", n_per_class=4)
    parts = {"train": [], "val": [], "eval": []}
    for i, item in enumerate(every.items):
        parts[["train", "train", "val", "eval"][i % 4]].append(item)
    paths = {}
    for name, items in parts.items():
        paths[f"{name}_json"] = str(DataSplit(name, items, every.labels).to_datafile(
            tmp_path / f"{name}.json"))
    paths["label_csv"] = str(every.write_label_csv(tmp_path / "labels.csv"))
    return paths


@pytest.mark.parametrize("metrics, wa", [("acc", False), ("mAP", True)])
def test_best_validation_epoch_is_the_reported_model(tmp_path, metrics, wa):
    """run.py with --data-eval: load best_audio_model.pth (the best validation epoch's, saved by
    train()) and evaluate it on the evaluation set; with --wa too, the weight average only goes
    to wa_result.csv and the reported model is still the best validation epoch's."""
    config = _ci(epochs=4, metrics=metrics, wa=wa, wa_start=1, wa_end=4,
                 **_own_data_with_validation(tmp_path))
    model, _, results, states = _run(config, tmp_path / "run")
    epochs = results["epochs"]
    best = official_best_epoch([e[f"val_{metrics}"] for e in epochs])
    assert results["selection"] == f"best validation {metrics}: epoch {best}"
    _assert_state_equal(model.state_dict(), states[best])
    # the test numbers are those of that epoch's model on the test split
    for k in ("acc", "mAP", "loss"):
        assert results["test"][k] == pytest.approx(epochs[best - 1][f"test_{k}"], abs=1e-6), k


def test_without_validation_the_official_pick_is_the_best_epoch_on_test(tmp_path):
    """ESC-50 has no validation split: get_esc_result.py picks the epoch by its test accuracy
    (for one fold, that fold's own best epoch). The model at the end is the final epoch's."""
    model, _, results, states = _run(_ci(epochs=4), tmp_path)
    epochs = results["epochs"]
    esc = official_esc_summary([[e["test_acc"] for e in epochs]])
    assert results["best_epoch_on_test"]["epoch"] == esc["best_epoch"]
    assert results["best_epoch_on_test"]["acc"] == esc["mean"]
    assert results["best_epoch_on_test"]["mAP"] == epochs[esc["best_epoch"] - 1]["test_mAP"]
    assert results["selection"] == "final epoch (no validation split)"
    _assert_state_equal(model.state_dict(), states[4])
    for k in ("acc", "mAP", "loss"):
        assert results["test"][k] == pytest.approx(epochs[-1][f"test_{k}"], abs=1e-6), k


# ---------------------------------------------------------------- losses


def _ce_steps_on_mixed_labels(tmp_path, recording, quirk: bool):
    """A run where every training clip is mixed (mixup 1.0): each step's reported loss next to
    the loss recomputed from its logits and labels both ways."""
    _, history, _ = finetune(_ci(epochs=1, mixup=1.0, ce_target_quirk=quirk), out_dir=tmp_path)
    reported = [r["loss"] for r in history.where("step")]
    batches = recording.train_batches()
    assert len(batches) == len(reported) == 2  # 8 train clips, batch 4
    labels = torch.cat([y for _, y in batches])
    assert ((labels > 0).sum(1) == 2).any(), "no two-class mix was drawn"
    official = [float(train_loss(x, y, True)) for x, y in batches]
    soft = [float(train_loss(x, y, False)) for x, y in batches]
    assert official != pytest.approx(soft, abs=1e-4)  # the two choices differ on these steps
    return reported, official, soft


def test_ce_on_the_soft_mixed_label_without_the_quirk(tmp_path, recording):
    reported, _, soft = _ce_steps_on_mixed_labels(tmp_path, recording, quirk=False)
    assert reported == pytest.approx(soft, abs=1e-6)


def test_ce_on_the_official_target_with_the_quirk(tmp_path, recording):
    reported, official, _ = _ce_steps_on_mixed_labels(tmp_path, recording, quirk=True)
    assert reported == pytest.approx(official, abs=1e-6)


@pytest.mark.parametrize("loss", ["CE", "BCE"])
@pytest.mark.parametrize("quirk", [True, False])
def test_validation_loss_as_official(tmp_path, recording, loss, quirk):
    """6 test clips in eval batches of 2 * batch_size = 4: batches of 4 and 2, so the mean of the
    batch losses (official) is not the mean over clips."""
    config = _ci(epochs=2, batch_size=2, synthetic_per_class=4, loss=loss,
                 valid_loss_quirk=quirk)
    _, _, results = finetune(config, out_dir=tmp_path)
    batches = recording.eval_batches()
    assert [len(x) for x, _ in batches] == [4, 2] * 3  # epoch 1, epoch 2, the final report
    reported = [e["test_loss"] for e in results["epochs"]] + [results["test"]["loss"]]
    for i, value in enumerate(reported):
        mine = batches[2 * i: 2 * i + 2]
        assert value == pytest.approx(official_valid_loss(mine, loss, quirk), abs=1e-6)
        assert value != pytest.approx(official_valid_loss(mine, loss, not quirk), abs=1e-4)
        x, y = torch.cat([b[0] for b in mine]), torch.cat([b[1] for b in mine])
        per_clip = official_valid_loss([(x, y)], loss, quirk)  # one batch: the mean over clips
        assert value != pytest.approx(per_clip, abs=1e-7)


# ---------------------------------------------------------------- folds


def _fake_finetune(curves: dict[int, dict[str, list[float]]], calls: list):
    """``finetune`` returning known per-epoch test curves for each held-out fold."""

    def fake(config, *, pretrained=None, out_dir, callback=None):
        calls.append((config.test_fold, Path(out_dir).name))
        c = curves[config.test_fold]
        epochs = [{"test_acc": a, "test_mAP": m} for a, m in zip(c["acc"], c["mAP"], strict=True)]
        return None, None, {"epochs": epochs, "test": {"acc": c["acc"][-1], "mAP": c["mAP"][-1]}}

    return fake


def test_folds_take_the_epoch_best_on_average(tmp_path, monkeypatch):
    # accuracies in eighths (exact in binary): epoch sums 17, 14, 17, 16 -> epochs 1 and 3 tie
    # on the average and the official takes epoch 1; each fold's own best epoch is 2, 3, 1.
    acc = {1: [6 / 8, 7 / 8, 5 / 8, 6 / 8], 2: [5 / 8, 3 / 8, 6 / 8, 6 / 8],
           3: [6 / 8, 4 / 8, 6 / 8, 4 / 8]}
    m_ap = {1: [0.5, 0.25, 0.75, 0.5], 2: [0.5, 0.5, 0.75, 0.25], 3: [0.25, 0.5, 0.5, 1.0]}
    curves = {f: {"acc": acc[f], "mAP": m_ap[f]} for f in acc}
    calls = []
    monkeypatch.setattr(ft, "finetune", _fake_finetune(curves, calls))

    summary = finetune_folds(_ci(), (1, 2, 3), out_dir=tmp_path)
    assert calls == [(1, "fold1"), (2, "fold2"), (3, "fold3")]
    esc = official_esc_summary([acc[f] for f in (1, 2, 3)])
    assert esc["best_epoch"] == 1 and esc["fold"] == [6 / 8, 5 / 8, 6 / 8]
    assert summary["best_epoch"] == esc["best_epoch"]
    assert summary["fold_acc"] == esc["fold"]
    assert summary["mean_acc"] == pytest.approx(esc["mean"])
    assert summary["mean_final_acc"] == pytest.approx(16 / 24)
    assert (tmp_path / "results.json").is_file()

    # metrics="mAP" (result.csv's first column is then mAP): the mAP curves decide
    summary = finetune_folds(_ci(metrics="mAP"), (1, 2, 3), out_dir=tmp_path)
    esc = official_esc_summary([m_ap[f] for f in (1, 2, 3)])
    assert esc["best_epoch"] == 3
    assert (summary["best_epoch"], summary["fold_mAP"]) == (esc["best_epoch"], esc["fold"])
    assert summary["mean_mAP"] == pytest.approx(esc["mean"])
