"""Packed pretraining inputs, encoders scored clip by clip, and the scale study's snapshots."""

import numpy as np
import pytest
import torch

from ssast_teach import evaluate, study
from ssast_teach.audio import FrontEnd, FrontEndConfig
from ssast_teach.checkpoints import load_checkpoint
from ssast_teach.datasets import (
    PackedFbankDataset,
    clip_frames,
    evaluation_splits,
    pretraining_mix,
)
from ssast_teach.model import SSASTModel


@pytest.fixture(scope="module")
def mix():
    return pretraining_mix("audio+speech", esc10_folds=(1,))


def test_clip_frames_is_the_front_ends_frame_count(mix):
    front = FrontEnd(FrontEndConfig())
    for item in mix.items[::250]:
        assert clip_frames(item["wav"]) == front.raw_fbank(item["wav"]).shape[0], item["wav"]


def test_packing_covers_every_clip_once_in_order(mix):
    ds = PackedFbankDataset(mix, FrontEndConfig(target_length=128))
    flat = [i for group in ds.groups for i in group]
    assert sorted(flat) == list(range(len(mix)))
    frames = [clip_frames(it["wav"]) for it in mix.items]
    for group in ds.groups[:-1]:  # the last pack may be short
        if len(group) == 1:
            continue
        assert all(frames[i] < 128 for i in group)  # only short clips are packed
        assert sum(frames[i] for i in group) >= 128 > sum(frames[i] for i in group[:-1])
    x, y = ds[0]
    assert x.shape == (128, 128) and y.shape == (1,)
    packed = [g for g in ds.groups if len(g) > 1]
    assert packed and len(ds) < len(mix)  # the digits share inputs
    with pytest.raises(ValueError, match="mixup"):
        PackedFbankDataset(mix, FrontEndConfig(mixup=0.5), training=True)


def test_probe_and_baseline_score_the_same_clips_in_fold_order():
    torch.manual_seed(0)
    model = SSASTModel.for_pretraining("mini", input_tdim=128)
    clips = evaluate.test_clips("speech_commands_mini")
    p = evaluate.probe(model, "speech_commands_mini")
    b = evaluate.baseline("speech_commands_mini")
    assert p.correct.shape == b.correct.shape == (1, len(clips)) == (1, 51)
    assert set(np.unique(p.correct)) <= {0, 1}
    again = evaluate.probe(model, "speech_commands_mini")
    assert np.array_equal(p.correct, again.correct)  # deterministic
    back = evaluate.Scored.from_dict(p.to_dict())
    assert (back.method, back.task, back.folds) == (p.method, p.task, p.folds)
    assert np.array_equal(back.correct, p.correct)
    folds = evaluation_splits("esc10_cv")
    assert evaluate.test_clips("esc10") == [it["wav"] for _, _, te in folds for it in te.items]
    with pytest.raises(ValueError, match="task='nope'"):
        evaluate.probe(model, "nope")


def test_snapshots_resume_exactly(tmp_path):
    """A run stopped at budget 2 and resumed to 4 gives the weights of a run stopped at 4."""
    arm = study.StudyArm("t", "mini", "patch", (2, 4))
    config = study.pretrain_config(arm, input_tdim=64, mask_patch=24, batch_size=8)
    snaps = study.pretrain_snapshots(arm, tmp_path / "legs", config=config)
    straight = study.pretrain_snapshots(study.StudyArm("t", "mini", "patch", (4,)),
                                        tmp_path / "one", config=config)
    a, extra = load_checkpoint(snaps[4])
    b, _ = load_checkpoint(straight[4])
    assert extra["step"] == 4 and load_checkpoint(snaps[2])[1]["step"] == 2
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(va, vb), k
    assert study.pretrain_snapshots(arm, tmp_path / "legs", config=config) == snaps  # kept


def test_comparisons_pair_each_score_with_baseline_and_scratch():
    ones, zeros = [[1] * 40], [[0] * 40]
    scores = {
        "baseline/esc10": {"method": "b", "task": "esc10", "folds": [], "correct": zeros},
        "mini-patch/scratch/probe/esc10": {"method": "s", "task": "esc10", "folds": [],
                                           "correct": ones},
        "mini-patch/step282/probe/esc10": {"method": "p", "task": "esc10", "folds": [],
                                           "correct": ones},
    }
    rows = study.comparisons({"scores": scores})
    assert [(r["against"], r["verdict"]) for r in rows] == [
        ("baseline", "held beyond noise"), ("scratch", "inconclusive")]
    assert rows[0]["budget"] == 282 and rows[0]["task"] == "esc10"


def test_reference_checkpoint_with_provenance(tmp_path, monkeypatch):
    import json

    monkeypatch.setitem(study.ARMS, "t", study.StudyArm("t", "mini", "frame", (2,)))
    path = study.make_reference("t", 2, name="pretrained_frame", work_dir=tmp_path / "work",
                                out_dir=tmp_path / "ref", command="test")
    assert path == tmp_path / "ref" / "pretrained_frame.pth"
    model, extra = load_checkpoint(path)
    assert (model.config.fshape, model.config.tshape, extra["step"]) == (128, 2, 2)
    prov = json.loads((tmp_path / "ref" / "provenance_frame.json").read_text())
    assert prov["command"] == "test" and prov["budget_steps"] == 2 and prov["config"]["pack_clips"]
    assert {"torch", "cpu", "date", "seed", "pretrain_seconds", "validation_curve"} <= set(prov)
    with pytest.raises(ValueError, match="budgets"):
        study.make_reference("t", 3, work_dir=tmp_path / "work", out_dir=tmp_path / "ref")
