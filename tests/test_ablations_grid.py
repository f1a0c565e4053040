"""The ablation grid in cells: each (run, seed) kept in its own file, skipped when done, redone
when its settings changed, and assembled (whole or partial) into one results file."""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import ssast_teach
from ssast_teach import ablations
from ssast_teach.evaluate import Scored

MICRO = replace(ablations.SCALES["ci"], input_tdim=32, steps=1, batch_size=2, val_clips=2)


@pytest.fixture
def fake(monkeypatch):
    """Pretraining and probes replaced by instant stand-ins that count their calls."""
    calls = []

    def pretrain_run(run, s, work_dir, seed):
        calls.append((run.name, seed))
        return None, {"pretrain_steps": s.steps, "mask_patch": 1, "pretrain_seconds": 1.0}

    def probe(model, task, name):
        rng = np.random.default_rng(len(calls) + len(task))
        return Scored(name, task, rng.integers(0, 2, size=(1, 10)), ("f",))

    monkeypatch.setattr(ablations, "_pretrain_run", pretrain_run)
    monkeypatch.setattr(ablations, "probe", probe)
    return calls


def test_a_finished_cell_is_read_not_redone(tmp_path, fake):
    first = ablations.run_grid(MICRO, work_dir=tmp_path, runs=["joint", "frame"], seeds=(0, 1))
    assert fake == [("joint", 0), ("frame", 0), ("joint", 1), ("frame", 1)]  # seed by seed
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("cell.json")) == [
        f"ci/seed{s}/{r}/cell.json" for s in (0, 1) for r in ("frame", "joint")]
    again = ablations.run_grid(MICRO, work_dir=tmp_path, runs=["joint", "frame"], seeds=(0, 1))
    assert len(fake) == 4  # nothing pretrained twice
    assert again["runs"] == first["runs"]
    p = again["provenance"]
    assert p["complete"] and p["cells_done"] == "4 of 4"
    assert p["seconds"] == pytest.approx(4 * 1.0, abs=0.5)  # pretraining and probes
    assert p["torch_threads"] == 1 and p["precision"] in ("fp32", "bf16")
    assert {"command", "seeds", "versions", "started", "finished", "cpu", "cpu_bf16"} <= set(p)
    joint = again["runs"][0]
    assert joint["seeds"] == [0, 1] and np.asarray(joint["probe"]["esc10"]["correct"]).shape == (2, 10)


def test_a_cell_made_with_other_settings_is_redone(tmp_path, fake):
    ablations.run_grid(MICRO, work_dir=tmp_path, runs=["joint"], seeds=(0,))
    ablations.run_grid(replace(MICRO, steps=2), work_dir=tmp_path, runs=["joint"], seeds=(0,))
    assert fake == [("joint", 0), ("joint", 0)]
    cell = json.loads((tmp_path / "ci" / "seed0" / "joint" / "cell.json").read_text())
    assert cell["settings"]["scale"]["steps"] == 2


def test_assemble_whole_or_partial(tmp_path, fake):
    ablations.run_grid(MICRO, work_dir=tmp_path, runs=["joint", "scratch"], seeds=(0, 1))
    (tmp_path / "ci" / "seed1" / "joint" / "cell.json").unlink()
    (tmp_path / "ci" / "seed0" / "scratch" / "cell.json").unlink()
    (tmp_path / "ci" / "seed1" / "scratch" / "cell.json").unlink()
    with pytest.raises(FileNotFoundError, match="3 cells of the ci grid are not done"):
        ablations.assemble(MICRO, tmp_path, ["joint", "scratch"], (0, 1))
    part = ablations.assemble(MICRO, tmp_path, ["joint", "scratch"], (0, 1), partial=True)
    assert [(r["name"], r["seeds"]) for r in part["runs"]] == [("joint", [0])]  # scratch: none
    assert not part["provenance"]["complete"]
    assert part["provenance"]["missing"] == ["scratch seed 0", "joint seed 1", "scratch seed 1"]
    assert [f.verdict for f in ablations.findings(part)][0] == "not tested"


def test_command_line_partial_runs_nothing(tmp_path, fake, capsys, monkeypatch):
    monkeypatch.setitem(ablations.SCALES, "ci", MICRO)
    ablations.run_grid(MICRO, work_dir=tmp_path, runs=["joint"], seeds=(0,))
    out = tmp_path / "partial.json"
    assert ablations.main(["--scale", "ci", "--partial", "--work-dir", str(tmp_path),
                           "--seeds", "0", "1", "--out", str(out)]) == 0
    assert len(fake) == 1
    saved = ablations.load_results(out)
    assert [r["name"] for r in saved["runs"]] == ["joint"] and "--partial" in saved["provenance"]["command"]
    assert "1 of 22 cells" in capsys.readouterr().out


def test_workers_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="workers=0"):
        ablations.run_grid(MICRO, work_dir=tmp_path, runs=["joint"], workers=0)


def test_audio_small_pretrains_on_a_tenth_of_the_audio_clips(tmp_path):
    small, audio = ablations.RUNS["audio_small"], ablations.RUNS["audio_only"]
    assert (small.data, small.data_fraction, small.published) == ("audio", 0.1, "audio_model_as20k")
    pool = len(ablations._pool("audio", 0).items) - MICRO.val_clips
    # enough steps for the list of clips to pass every one of them
    _, record = ablations._pretrain_run(small, replace(MICRO, steps=5), tmp_path, 0)
    assert record["train_clips_distinct"] == round(0.1 * pool) and audio.data_fraction == 1.0


def test_a_stopped_pretraining_continues_from_its_checkpoint(tmp_path, monkeypatch):
    run, s = ablations.RUNS["joint"], replace(MICRO, steps=4)
    straight, _ = ablations._pretrain_run(run, s, tmp_path / "straight", 0)
    real = ablations.pretrain

    def stopped_at_step_2(config, *, out_dir, resume=None):
        def callback(row):
            if row.get("kind") == "step" and row["step"] == 2:
                raise KeyboardInterrupt  # as a Ctrl-C or a killed worker's last checkpoint
        return real(config, out_dir=out_dir, resume=resume, callback=callback)

    monkeypatch.setattr(ablations, "pretrain", stopped_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        ablations._pretrain_run(run, s, tmp_path / "legs", 0)
    monkeypatch.setattr(ablations, "pretrain", real)
    resumed, record = ablations._pretrain_run(run, s, tmp_path / "legs", 0)
    assert record["pretrain_steps"] == 4
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("claims, verdict", [
    (["held beyond noise", "held beyond noise"], "held beyond noise"),
    (["held beyond noise", "inconclusive"], "inconclusive"),
    (["reversed beyond noise", "inconclusive"], "reversed beyond noise"),
    (["held beyond noise", "reversed beyond noise"], ablations.MIXED),
    (["inconclusive"], "inconclusive"),
])
def test_finding_verdict_combines_claims(claims, verdict):
    assert ablations.finding_verdict(claims) == verdict


def test_seeds_needed_from_the_measured_noise():
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 2, size=2000)  # each clip easy or hard for both models
    same = np.tile(clips, (3, 1))
    assert ablations.seeds_needed(same, same) == np.inf  # no difference: no seed count finds one
    better = same.copy()
    better[:, clips == 0] = 1  # A gets every clip right: far beyond noise with one seed
    assert ablations.seeds_needed(better, same) == 1.0

    def noisy(flip):  # B with each clip's result flipped at random, seed by seed
        return np.where(rng.random((3, 2000)) < flip, 1 - same, same)

    small = np.where(rng.random((3, 2000)) < 0.01, 1, same)  # A: a few more clips right
    assert 1 < ablations.seeds_needed(small, noisy(0.05)) < np.inf  # more than 3 seeds, measured
    with pytest.raises(ValueError, match="2 or more seeds"):
        ablations.seeds_needed(same[:1], same)


def test_results_name_the_library_commit_they_were_made_with(tmp_path, fake):
    """Cells made with different library code must say so, even under one ``__version__``."""
    repo = tmp_path / "repo"
    shutil.copytree(Path(ssast_teach.__file__).parent, repo / "ssast_teach",
                    ignore=shutil.ignore_patterns("__pycache__"))
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t",
           "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "library"], check=True)
    commit = subprocess.run([*git, "log", "-1", "--format=%h"], capture_output=True, text=True,
                            check=True).stdout.strip()

    def version(path=None):
        env = {"PYTHONPATH": str(repo), "PATH": path if path is not None else os.environ["PATH"]}
        # -S: no site-packages, whose editable-install finder would import the checkout's copy
        return subprocess.run([sys.executable, "-S", "-c",
                               "import ssast_teach; print(ssast_teach.code_version())"],
                              env=env, cwd=tmp_path, capture_output=True, text=True,
                              check=True).stdout.strip()

    assert version() == f"{ssast_teach.__version__}+g{commit}"
    with open(repo / "ssast_teach" / "stats.py", "a") as f:
        f.write("\n")
    assert version() == f"{ssast_teach.__version__}+g{commit}.dirty"
    assert version(path=str(tmp_path / "no-git-here")) == ssast_teach.__version__

    cell = ablations.run_cell("joint", MICRO, tmp_path / "runs", 0)
    assert cell["versions"]["ssast_teach"] == ssast_teach.code_version()
