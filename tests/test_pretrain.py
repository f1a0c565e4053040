"""Chapter 06 pretraining at ci scale: learning, exact resume, Ctrl-C, NaN, configs, CLI."""

import numpy as np
import pytest
import torch

from ssast_teach import pretrain as pt
from ssast_teach.checkpoints import load_pretrained
from ssast_teach.model import SSASTModel
from ssast_teach.pretrain import PretrainConfig, pretrain
from ssast_teach.training import NonFiniteLossError, load_train_checkpoint, warmup_lr


def _ci(**overrides):
    base = dict(precision="fp32", checkpoint_every=0)
    return PretrainConfig.preset("ci", **{**base, **overrides})


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    """One synthetic data folder for the module (written once, reused by every run)."""
    return tmp_path_factory.mktemp("pre_data")


def _run(tmp_path, config, **kwargs):
    return pretrain(config, out_dir=tmp_path, **kwargs)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_loss_decreases_on_a_fixed_batch(tmp_path):
    # 8 clips, 2 held out: one batch of 6 seen every step (fresh masks each step)
    config = _ci(synthetic_per_class=2, val_clips=2, batch_size=6, epochs=12, lr=5e-3,
                 warmup=False)
    _, history = _run(tmp_path, config)
    _, losses = history.series("loss", kind="step")
    assert len(losses) == 12
    assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3])  # measured: 0.78
    assert (tmp_path / "pretrained.pth").is_file()
    model = load_pretrained(tmp_path / "pretrained.pth")
    assert model.grid.num_patches == 32


def test_resume_after_interrupt_equals_uninterrupted(tmp_path):
    full_model, full_history = _run(tmp_path / "full", _ci())

    def stop_at_4(row):  # mid-epoch 2 of 3 steps each
        if row["kind"] == "step" and row["step"] == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "part", _ci(), callback=stop_at_4)
    saved = load_train_checkpoint(tmp_path / "part")  # written before the re-raise
    assert saved["state"]["step"] == 4 and saved["state"]["epoch"] == 1

    torch.manual_seed(1234)
    model, history = _run(tmp_path / "part", _ci(), resume=tmp_path / "part")
    for (k, a), b in zip(full_model.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert full_history.series("loss") == history.series("loss")
    assert full_history.series("val_acc") == history.series("val_acc")


def test_an_interrupt_at_a_step_with_an_evaluation_lets_it_run_first(tmp_path):
    # epoch_iter=2: evaluate (and step the plateau scheduler) every 2 steps; the interrupt is
    # asked for at step 4's row, before its evaluation: the run evaluates, saves, then stops
    config = _ci(epoch_iter=2)
    full_model, full_history = _run(tmp_path / "full", config)
    assert [r["step"] for r in full_history.where("eval")] == [2, 4, 6]

    def stop_at_4(row):
        if row["kind"] == "step" and row["step"] == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "part", config, callback=stop_at_4)
    saved = load_train_checkpoint(tmp_path / "part")
    assert saved["state"]["step"] == 4
    assert [r["step"] for r in saved["history"] if r["kind"] == "eval"] == [2, 4]
    model, history = _run(tmp_path / "part", config, resume=tmp_path / "part")
    assert history.series("val_acc") == full_history.series("val_acc")
    for a, b in zip(full_model.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    poison = {"on": False}
    mpg = SSASTModel.mpg

    def poisoned_mpg(self, x, mask_ids):
        mse = mpg(self, x, mask_ids)
        return mse * float("nan") if poison["on"] else mse

    monkeypatch.setattr(SSASTModel, "mpg", poisoned_mpg)

    def at_step_3(row):
        if row["kind"] == "step" and row["step"] == 3:
            poison["on"] = True  # the 4th step's loss is NaN

    with pytest.raises(NonFiniteLossError, match=r"step 3 .*before this step changed any weight"):
        _run(tmp_path, _ci(checkpoint_every=2), callback=at_step_3)
    saved = load_train_checkpoint(tmp_path)
    assert saved["state"]["step"] == 3  # the end of epoch 1, the last good state
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())
    assert not (tmp_path / "pretrained.pth").exists()


def test_single_pass_and_two_pass_both_run_and_differ(tmp_path):
    _, two = _run(tmp_path / "two", _ci(epochs=1))
    _, one = _run(tmp_path / "one", _ci(epochs=1, single_pass=True))
    for history in (one, two):
        row = history.where("step")[0]
        assert {"acc", "nce", "mse"} <= set(row)
        assert row["loss"] == pytest.approx(row["nce"] + 10 * row["mse"], rel=1e-5)
    assert one.where("step")[0]["loss"] != two.where("step")[0]["loss"]


@pytest.mark.parametrize("task", ["pretrain_mpc", "pretrain_mpg"])
def test_single_objectives_run(tmp_path, task):
    _, history = _run(tmp_path, _ci(task=task, epochs=1))
    row = history.where("step")[-1]
    assert ("acc" in row) == (task == "pretrain_mpc") and ("mse" in row) == (task == "pretrain_mpg")
    # once per epoch (epoch_iter=None): the value the plateau scheduler follows
    evaluation = history.where("eval")[0]
    assert ("val_acc" if task == "pretrain_mpc" else "val_mse") in evaluation


def test_warmup_follows_the_official_staircase(tmp_path):
    config = _ci(epochs=2, warmup_steps=4, warmup_every=2, lr=1e-3)
    _, history = _run(tmp_path, config)
    lrs = [r["lr"] for r in history.where("step")]
    expected, lr = [], None
    for step in range(len(lrs)):
        lr = warmup_lr(step, 1e-3, 4, 2) if step % 2 == 0 and step <= 4 else lr
        expected.append(lr)
    assert lrs == pytest.approx(expected)
    assert lrs[0] == 0.0  # official: the first warmup_every steps run at lr 0


def test_frame_model_uses_frame_masks(tmp_path):
    config = _ci(fshape=128, tshape=2, mask_patch=24, epochs=1)
    assert not config.use_cluster
    _, history = _run(tmp_path, config)
    assert np.isfinite(history.where("step")[-1]["loss"])


def test_bad_configs_are_clear_errors():
    with pytest.raises(ValueError, match="must equal fshape"):
        PretrainConfig(fstride=10)
    with pytest.raises(ValueError, match="does not fit the patch grid"):
        PretrainConfig.preset("ci", mask_patch=40)
    with pytest.raises(ValueError, match="eval_mask_patch"):
        PretrainConfig(input_tdim=256, mask_patch=100)  # official eval masks 400 of 128
    with pytest.raises(ValueError, match="scale"):
        PretrainConfig.preset("huge")
    with pytest.raises(ValueError, match="task"):
        PretrainConfig(task="pretrain_everything")
    with pytest.raises(ValueError, match="single_pass"):
        PretrainConfig(task="pretrain_mpc", single_pass=True)


def test_paper_preset_is_the_official_recipe():
    c = PretrainConfig.preset("paper")
    assert (c.size, c.fshape, c.tshape, c.input_tdim, c.mask_patch) == ("base", 16, 16, 1024, 400)
    assert (c.base_lr, c.betas, c.weight_decay, c.batch_size, c.epochs) == (
        1e-4, (0.95, 0.999), 5e-7, 24, 10)
    assert (c.warmup_steps, c.warmup_every, c.lr_patience, c.lr_factor) == (1000, 50, 2, 0.5)
    assert c.use_cluster and PretrainConfig(size="tiny").base_lr == 5e-4
    assert (c.pack_clips, c.max_steps) == (False, None)  # the course's deviations are off


def test_classroom_preset_packs_and_stops_at_its_budget():
    from ssast_teach.pretrain import steps_per_epoch

    c = PretrainConfig.preset("classroom")
    assert (c.pack_clips, c.max_steps, c.epoch_iter, c.mask_patch, c.num_patches) == (
        True, 2820, 282, 50, 64)
    assert c.epochs * steps_per_epoch(c) >= c.max_steps  # enough epochs to reach the budget


def test_max_steps_stops_mid_epoch(tmp_path):
    _, history = _run(tmp_path / "mid", _ci(epochs=3, max_steps=5))
    assert len(history.where("step")) == 5  # 3 steps per epoch: stopped in the second
    assert [r["step"] for r in history.where("eval")] == [3]  # epoch_iter None: every 3 steps
    _, history = _run(tmp_path / "end", _ci(epochs=3, max_steps=6))
    assert [r["step"] for r in history.where("eval")] == [3, 6]  # stopping there or not


def test_cli(tmp_path, capsys):
    with pytest.raises(SystemExit):
        pt.main(["--help"])
    text = capsys.readouterr().out
    assert "--mask-patch" in text and "official: 400" in text
    with pytest.raises(SystemExit, match="fstride"):
        pt.main(["--scale", "ci", "--out", str(tmp_path), "--fstride", "10"])
    with pytest.raises(SystemExit):
        pt.main(["--scale", "galactic", "--out", str(tmp_path)])
    pt.main(["--scale", "ci", "--out", str(tmp_path), "--epochs", "1", "--precision", "fp32",
             "--correct", "softmax", "warmup"])
    assert (tmp_path / "history.json").is_file() and (tmp_path / "pretrained.pth").is_file()
    config = load_train_checkpoint(tmp_path)["config"]
    assert (config["softmax_quirk"], config["warmup_quirk"]) == (False, False)
    assert "pretraining done in" in capsys.readouterr().out  # the CLI shows the library's log
    with pytest.raises(SystemExit):
        pt.main(["--scale", "ci", "--out", str(tmp_path), "--correct", "ce_target"])  # finetune's
