"""Around the training loops: data order, exact resume, Ctrl-C, non-finite losses, precision."""

import random
import signal

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from conftest import RunsCode
from ssast_teach import training
from ssast_teach.training import (
    DistEnv,
    MetricsHistory,
    NonFiniteLossError,
    TrainRun,
    epoch_batches,
    load_train_checkpoint,
    resolve_precision,
    warmup_lr,
)


def _toy_run(out_dir, epochs=3, seed=0, callback=None):
    training.seed_all(123)
    x = torch.randn(40, 6)
    y = x @ torch.randn(6, 1) / 3 + 0.1 * torch.randn(40, 1)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.9)
    return TrainRun(
        model=model, optimizer=opt, scheduler=sched, dataset=TensorDataset(x, y), batch_size=8,
        n_epochs=epochs, seed=seed, config={"seed": seed, "batch_size": 8}, out_dir=out_dir,
        progress=False, callback=callback,
    )


def _train(run, in_step=None, at_epoch_end=None, poison_step=None):
    """The trainers' loop on a toy regression (5 steps per epoch). ``in_step(step)`` runs
    between the forward pass and the update, ``at_epoch_end(epoch)`` before the scheduler."""
    for epoch in run.epochs():
        for x, y in run.batches():
            # the global RNG takes part, like an augmentation would: resume must restore it
            noise = 0.01 * torch.randn_like(x) * random.random() * float(np.random.rand())
            loss = torch.nn.functional.mse_loss(run.model(x + noise), y)
            if run.state.step == poison_step:
                loss = loss * float("nan")
            if in_step is not None:
                in_step(run.state.step)
            run.check_finite(loss)
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            run.optimizer.step()
            run.record_step(loss)
        if at_epoch_end is not None:
            at_epoch_end(epoch)
        run.scheduler.step()
        run.record("epoch", {"lr": run.optimizer.param_groups[0]["lr"]})
    return run


def _assert_same_run(a, b):
    for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True):
        assert torch.equal(x, y)
    assert a.history.rows == b.history.rows
    assert a.optimizer.param_groups[0]["lr"] == b.optimizer.param_groups[0]["lr"]


def _resumed(out_dir):
    torch.manual_seed(999)  # a fresh process would have another RNG state: resume restores it
    run = _toy_run(out_dir)
    run.resume(out_dir)
    return _train(run)


def test_epoch_batches_are_seeded_and_shared_across_processes():
    data = TensorDataset(torch.arange(21))
    one = epoch_batches(data, 6, seed=3, epoch=1, env=DistEnv())
    assert len(one) == 3 and all(len(b) == 6 for b in one)  # last incomplete batch dropped
    assert one == epoch_batches(data, 6, seed=3, epoch=1, env=DistEnv())
    assert one != epoch_batches(data, 6, seed=3, epoch=2, env=DistEnv())
    r0 = epoch_batches(data, 6, 3, 1, DistEnv(rank=0, world_size=2))
    r1 = epoch_batches(data, 6, 3, 1, DistEnv(rank=1, world_size=2))
    # two processes: each global batch is the one-process batch, dealt round-robin
    for b, b0, b1 in zip(one, r0, r1, strict=True):
        assert sorted(b0 + b1) == sorted(b) and b0 == b[0::2] and b1 == b[1::2]
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        epoch_batches(data, 5, 3, 1, DistEnv(rank=0, world_size=2))


def test_loss_decreases_and_rows_come_in_order(tmp_path):
    run = _train(_toy_run(tmp_path, epochs=6))
    _, losses = run.history.series("loss", kind="step")
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert [(r["kind"], r["step"], r["epoch"]) for r in run.history][4:7] == [
        ("step", 5, 1), ("epoch", 5, 1), ("step", 6, 2)]
    assert load_train_checkpoint(tmp_path)["state"] == {"step": 30, "epoch": 6, "batch": 0,
                                                        "extra": {}}


def test_resume_after_interrupt_is_exact(tmp_path):
    full = _train(_toy_run(tmp_path / "full"))
    rng_after_full = torch.rand(1)

    def stop_at_7(row):
        if row["kind"] == "step" and row["step"] == 7:  # mid-epoch 2 (5 batches per epoch)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(_toy_run(tmp_path / "part", callback=stop_at_7))
    saved = load_train_checkpoint(tmp_path / "part")  # saved before re-raising
    assert saved["state"]["step"] == 7 and saved["state"]["batch"] == 2

    resumed = _resumed(tmp_path / "part")
    _assert_same_run(full, resumed)
    assert torch.equal(torch.rand(1), rng_after_full)


def test_ctrl_c_lets_the_step_and_the_epoch_end_finish(tmp_path):
    full = _train(_toy_run(tmp_path / "full"))
    handler = signal.getsignal(signal.SIGINT)

    def ctrl_c(times=1):
        for _ in range(times):
            signal.raise_signal(signal.SIGINT)

    # in a step, between the forward pass and the update: the update still happens
    with pytest.raises(KeyboardInterrupt):
        _train(_toy_run(tmp_path / "step"), in_step=lambda step: step == 6 and ctrl_c())
    assert load_train_checkpoint(tmp_path / "step")["state"]["step"] == 7
    _assert_same_run(full, _resumed(tmp_path / "step"))

    # in epoch 2's end, before the scheduler step: the scheduler still steps, then the epoch's
    # end is saved
    with pytest.raises(KeyboardInterrupt):
        _train(_toy_run(tmp_path / "epoch"), at_epoch_end=lambda epoch: epoch == 2 and ctrl_c())
    saved = load_train_checkpoint(tmp_path / "epoch")
    assert saved["state"] == {"step": 10, "epoch": 2, "batch": 0, "extra": {}}
    assert saved["scheduler"]["last_epoch"] == 2
    _assert_same_run(full, _resumed(tmp_path / "epoch"))

    # twice: stop at once; the last checkpoint (the end of epoch 1) stays
    with pytest.raises(KeyboardInterrupt):
        _train(_toy_run(tmp_path / "twice"), in_step=lambda step: step == 6 and ctrl_c(2))
    assert load_train_checkpoint(tmp_path / "twice")["state"]["step"] == 5
    _assert_same_run(full, _resumed(tmp_path / "twice"))
    assert signal.getsignal(signal.SIGINT) is handler  # the loop gives Ctrl-C back


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    run = _toy_run(tmp_path, epochs=3)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(NonFiniteLossError, match=r"step 12 .*untouched"):
        _train(run, poison_step=12)
    assert signal.getsignal(signal.SIGINT) is handler
    saved = load_train_checkpoint(tmp_path)
    assert saved["state"]["epoch"] == 2 and saved["state"]["step"] == 10  # end of epoch 2
    assert all(torch.isfinite(v).all() for v in saved["model"].values())
    _toy_run(tmp_path).resume(tmp_path)  # loadable


def test_resume_refuses_another_data_order(tmp_path):
    _train(_toy_run(tmp_path, epochs=1))
    other = _toy_run(tmp_path, seed=1)
    with pytest.raises(ValueError, match="seed"):
        other.resume(tmp_path)
    with pytest.raises(FileNotFoundError):
        other.resume(tmp_path / "nowhere")


def test_official_warmup_formula():
    # traintest_mask.py: at global_step <= 1000 and global_step % 50 == 0, lr = step/1000 * lr
    assert warmup_lr(0, 1e-4) == 0.0
    assert warmup_lr(1, 1e-4) is None
    assert warmup_lr(50, 1e-4) == pytest.approx(5e-6)
    assert warmup_lr(500, 5e-4) == pytest.approx(2.5e-4)
    assert warmup_lr(1000, 1e-4) == pytest.approx(1e-4)
    assert warmup_lr(1050, 1e-4) is None


def test_cpu_info_reads_the_flags_the_bf16_choice_uses(monkeypatch, tmp_path):
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 amx_bf16\n\n"
                    "processor\t: 1\nflags\t\t: fpu\n")
    real_path = training.Path
    monkeypatch.setattr(training, "Path", lambda p: fake if p == "/proc/cpuinfo" else real_path(p))
    assert training.cpu_info()["model name"] == "Some CPU"
    assert training.cpu_supports_bf16()
    fake.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f\n")
    assert not training.cpu_supports_bf16()
    fake.unlink()
    assert training.cpu_info() == {} and not training.cpu_supports_bf16()


def test_precision_choice(monkeypatch):
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    monkeypatch.setattr(training, "cpu_supports_bf16", lambda: False)
    assert resolve_precision("auto", cpu) == "fp32"
    monkeypatch.setattr(training, "cpu_supports_bf16", lambda: True)
    assert resolve_precision("auto", cpu) == "bf16"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16", cpu)


def test_metrics_history_series_and_plot():
    h = MetricsHistory()
    h.append({"kind": "step", "step": 1, "loss": 2.0})
    h.append({"kind": "eval", "step": 1, "acc": 0.5})
    h.append({"kind": "step", "step": 2, "loss": 1.0})
    assert h.series("loss") == ([1, 2], [2.0, 1.0])
    assert len(h.where("eval")) == 1
    ax = h.plot("loss", kind="step")
    assert len(ax.lines) == 1


def test_corrected_warmup_sets_the_lr_at_every_step():
    got = [warmup_lr(step, 1e-3, 4, 2, warmup_quirk=False) for step in range(6)]
    assert got[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3]) and got[4:] == [None, None]


def _hostile_run_dir(tmp_path):
    """A run directory whose train_state.pt holds a pickle that would create ``marker``."""
    run = tmp_path / "handed_to_you"
    run.mkdir()
    marker = tmp_path / "payload_ran"
    payload = {"format": training.TRAIN_STATE_FORMAT, "config": {"seed": 0, "batch_size": 4},
               "model": {}, "state": {"step": 0, "epoch": 0, "batch": 0, "extra": {}},
               "rng": RunsCode(marker), "history": [], "optimizer": {}, "scheduler": None}
    torch.save(payload, run / training.CHECKPOINT_NAME)
    return run, marker


@pytest.mark.parametrize("trainer", ["pretrain", "finetune"])
def test_hostile_train_state_is_refused_by_both_clis(tmp_path, trainer, capsys):
    import importlib

    module = importlib.import_module(f"ssast_teach.{trainer}")
    run, marker = _hostile_run_dir(tmp_path)
    extra = ["--data", "synthetic"] if trainer == "finetune" else []
    with pytest.raises(SystemExit, match="refused.*Nothing in it was executed") as info:
        module.main(["--scale", "ci", *extra, "--out", str(tmp_path / "out"),
                     "--precision", "fp32", "--resume", str(run)])
    assert str(run / training.CHECKPOINT_NAME) in str(info.value)
    assert not marker.exists()
    with pytest.raises(training.TrainStateError, match="refused"):
        load_train_checkpoint(run)
    assert not marker.exists()
    # The payload is real: the unsafe loader does run it.
    torch.load(run / training.CHECKPOINT_NAME, weights_only=False)
    assert marker.exists()


def test_train_state_holds_only_tensors_and_plain_values(tmp_path):
    _train(_toy_run(tmp_path, epochs=1))
    payload = torch.load(tmp_path / training.CHECKPOINT_NAME, weights_only=True)
    assert payload["format"] == training.TRAIN_STATE_FORMAT
    assert isinstance(payload["rng"]["numpy"][1], torch.Tensor)
    with pytest.raises(training.TrainStateError, match="not an ssast_teach training checkpoint"):
        torch.save({"format": "something/1"}, tmp_path / "other.pt")
        load_train_checkpoint(tmp_path / "other.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / training.CHECKPOINT_NAME).read_bytes()[:100])
    with pytest.raises(training.TrainStateError, match="cut.pt.*truncated"):
        load_train_checkpoint(tmp_path / "cut.pt")
