"""The shared training loop: data order, exact resume, Ctrl-C, non-finite losses, precision."""

import random

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
    fit,
    load_train_checkpoint,
    resolve_precision,
    warmup_lr,
)


def _toy_run(out_dir, epochs=3, seed=0):
    training.seed_all(123)
    x = torch.randn(40, 6)
    y = x @ torch.randn(6, 1) / 3 + 0.1 * torch.randn(40, 1)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.9)
    run = TrainRun(
        model=model, optimizer=opt, scheduler=sched, dataset=TensorDataset(x, y), batch_size=8,
        epochs=epochs, seed=seed, config={"seed": seed, "batch_size": 8}, out_dir=out_dir,
        progress=False,
    )
    return run


def _step_fn(run):
    def step(x, y, state):
        # the global RNG takes part, like an augmentation would: resume must restore it
        noise = 0.01 * torch.randn_like(x) * random.random() * float(np.random.rand())
        loss = torch.nn.functional.mse_loss(run.model(x + noise), y)
        return loss, {}

    return step


def _fit(run, callback=None):
    return fit(run, _step_fn(run), after_epoch=lambda s: run.scheduler.step(), callback=callback)


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


def test_loss_decreases(tmp_path):
    run = _fit(_toy_run(tmp_path, epochs=6))
    _, losses = run.history.series("loss", kind="step")
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_resume_after_interrupt_is_exact(tmp_path):
    full = _fit(_toy_run(tmp_path / "full"))
    rng_after_full = torch.rand(1)

    def stop_at_7(row):
        if row["kind"] == "step" and row["step"] == 7:  # mid-epoch 2 (5 batches per epoch)
            raise KeyboardInterrupt

    part = _toy_run(tmp_path / "part")
    with pytest.raises(KeyboardInterrupt):
        _fit(part, callback=stop_at_7)
    saved = load_train_checkpoint(tmp_path / "part")  # saved before re-raising
    assert saved["state"]["step"] == 7 and saved["state"]["batch"] == 2

    torch.manual_seed(999)  # a fresh process would have another RNG state: resume restores it
    resumed = _toy_run(tmp_path / "part")
    resumed.resume(tmp_path / "part")
    _fit(resumed)
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(torch.rand(1), rng_after_full)
    assert [r["loss"] for r in full.history] == [r["loss"] for r in resumed.history]
    assert resumed.optimizer.param_groups[0]["lr"] == full.optimizer.param_groups[0]["lr"]


def test_interrupt_in_an_epoch_hook_reruns_it_on_resume(tmp_path):
    full = _fit(_toy_run(tmp_path / "full"))
    part = _toy_run(tmp_path / "part")
    calls = []

    def flaky_epoch_end(state):
        calls.append(state.epoch)
        if len(calls) == 2:
            raise KeyboardInterrupt
        part.scheduler.step()

    with pytest.raises(KeyboardInterrupt):
        fit(part, _step_fn(part), after_epoch=flaky_epoch_end)
    resumed = _toy_run(tmp_path / "part")
    resumed.resume(tmp_path / "part")
    _fit(resumed)
    assert resumed.optimizer.param_groups[0]["lr"] == full.optimizer.param_groups[0]["lr"]
    assert torch.equal(resumed.model[0].weight, full.model[0].weight)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    run = _toy_run(tmp_path, epochs=3)
    good = _step_fn(run)

    def poisoned(x, y, state):
        loss, metrics = good(x, y, state)
        return (loss * float("nan") if state.step == 12 else loss), metrics

    with pytest.raises(NonFiniteLossError, match=r"step 12 .*untouched"):
        fit(run, poisoned, after_epoch=lambda s: run.scheduler.step())
    saved = load_train_checkpoint(tmp_path)
    assert saved["state"]["epoch"] == 2 and saved["state"]["step"] == 10  # end of epoch 2
    assert all(torch.isfinite(v).all() for v in saved["model"].values())
    _toy_run(tmp_path).resume(tmp_path)  # loadable


def test_resume_refuses_another_data_order(tmp_path):
    _fit(_toy_run(tmp_path, epochs=1))
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
    run = _toy_run(tmp_path, epochs=1)
    _fit(run)
    payload = torch.load(tmp_path / training.CHECKPOINT_NAME, weights_only=True)
    assert payload["format"] == training.TRAIN_STATE_FORMAT
    assert isinstance(payload["rng"]["numpy"][1], torch.Tensor)
    with pytest.raises(training.TrainStateError, match="not an ssast_teach training checkpoint"):
        torch.save({"format": "something/1"}, tmp_path / "other.pt")
        load_train_checkpoint(tmp_path / "other.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / training.CHECKPOINT_NAME).read_bytes()[:100])
    with pytest.raises(training.TrainStateError, match="cut.pt.*truncated"):
        load_train_checkpoint(tmp_path / "cut.pt")
