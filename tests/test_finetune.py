"""Chapter 07 fine-tuning at ci scale: results, linear probe, optimiser, scheduler, metrics."""

import math

import pytest
import torch

from ssast_teach import finetune as ft
from ssast_teach.finetune import (
    FinetuneConfig,
    accuracy,
    average_precision,
    confusion_matrix,
    finetune,
    mean_average_precision,
    param_groups,
)
from ssast_teach.pretrain import PretrainConfig, pretrain


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A ci-scale pretraining run's checkpoint (mini, 16x16 patches, 128x64 input)."""
    out = tmp_path_factory.mktemp("pre")
    pretrain(PretrainConfig.preset("ci", precision="fp32", epochs=1), out_dir=out)
    return out / "pretrained.pth"


def _ci(**overrides):
    return FinetuneConfig.preset("synthetic", "ci", **{"precision": "fp32", **overrides})


def _check_results(results, n_classes=4):
    assert set(results["test"]) == {"acc", "mAP", "loss"}
    assert 0 <= results["test"]["acc"] <= 1 and 0 <= results["test"]["mAP"] <= 1
    cm = torch.tensor(results["confusion_matrix"])
    assert cm.shape == (n_classes, n_classes) and cm.sum() == 4  # 12 clips, every 3rd is test
    assert len(results["epochs"]) == 2 and "test_acc" in results["epochs"][0]
    assert results["class_names"] == ["chirp", "harmonic", "clicks", "noise"]
    clips = results["per_clip"]  # clip by clip, for paired tests
    assert len(clips["wav"]) == len(clips["target"]) == len(clips["prediction"]) == 4
    right = sum(p == t for p, t in zip(clips["prediction"], clips["target"], strict=True))
    assert right / 4 == pytest.approx(results["test"]["acc"])


def test_finetune_from_pretrained_and_from_scratch(tmp_path, pretrained):
    model, history, results = finetune(_ci(), pretrained=pretrained, out_dir=tmp_path / "pre")
    _check_results(results)
    assert results["selection"].startswith("final epoch")
    assert (tmp_path / "pre" / "results.json").is_file()
    assert (tmp_path / "pre" / "finetuned.pth").is_file()
    assert history.where("step") and model.n_classes == 4

    _, _, scratch = finetune(_ci(), pretrained=None, out_dir=tmp_path / "scratch")
    _check_results(scratch)
    assert scratch["mode"] == "fine-tuning from scratch"


def test_pretrained_weights_are_used(pretrained):
    from ssast_teach.checkpoints import load_state_dict

    sd = load_state_dict(pretrained)
    model = ft._model(_ci(), 4, pretrained)
    assert torch.equal(model.v.blocks[0].attn.qkv.weight, sd["v.blocks.0.attn.qkv.weight"])
    assert torch.equal(model.v.patch_embed.proj.weight, sd["v.patch_embed.proj.weight"])


def test_linear_probe_leaves_the_encoder_unchanged(tmp_path, pretrained):
    before = ft._model(_ci(), 4, pretrained).state_dict()
    model, _, results = finetune(_ci(linear_probe=True), pretrained=pretrained, out_dir=tmp_path)
    after = model.state_dict()
    for key, value in before.items():
        if key.startswith("mlp_head."):
            continue
        assert torch.equal(after[key], value), key
    assert not torch.equal(after["mlp_head.1.weight"], before["mlp_head.1.weight"])
    assert results["mode"] == "linear probe"


def test_head_lr_factor_in_param_groups(pretrained):
    config = _ci(lr=1e-4, head_lr=5)
    model = ft._model(config, 4, pretrained)
    groups = param_groups(model, config)
    assert [g["lr"] for g in groups] == [1e-4, 5e-4]
    head = {id(p) for p in model.mlp_head.parameters()}
    assert {id(p) for p in groups[1]["params"]} == head  # mlp_head.0/1 weight and bias
    assert len(groups[1]["params"]) == 4 and not head & {id(p) for p in groups[0]["params"]}


def test_multisteplr_milestones_and_per_epoch_decay(tmp_path):
    config = _ci(epochs=3, lr=1e-3, lrscheduler_start=2, lrscheduler_step=1, lrscheduler_decay=0.5)
    _, history, _ = finetune(config, out_dir=tmp_path)
    # the lr each epoch trained with: milestones range(2, 1000, 1) -> decay after epoch 2
    assert [r["lr"] for r in history.where("epoch")] == pytest.approx([1e-3, 1e-3, 5e-4])
    state = torch.load(tmp_path / "train_state.pt", weights_only=True)
    assert state["scheduler"]["milestones"] == {m: 1 for m in range(2, 1000)}


def test_official_presets():
    esc = FinetuneConfig.preset("esc50", "paper")
    assert (esc.input_tdim, esc.lr, esc.epochs, esc.batch_size, esc.freqm, esc.timem) == (
        512, 1e-4, 50, 48, 24, 96)
    assert (esc.fstride, esc.tstride, esc.loss, esc.warmup, esc.lrscheduler_start) == (
        10, 10, "CE", False, 6)
    sc = FinetuneConfig.preset("speechcommands", "paper")
    assert (sc.fshape, sc.tshape, sc.fstride, sc.tstride, sc.input_tdim) == (128, 2, 128, 1, 128)
    assert (sc.lr, sc.epochs, sc.batch_size, sc.mixup, sc.loss, sc.warmup) == (
        2.5e-4, 30, 128, 0.6, "BCE", True)
    a = FinetuneConfig.preset("audioset20k", "paper")
    assert (a.lr, a.epochs, a.batch_size, a.metrics, a.lrscheduler_step, a.lrscheduler_decay) == (
        5e-5, 25, 12, "mAP", 5, 0.5)
    assert FinetuneConfig.preset("esc10", "classroom").test_fold == 5


def test_average_precision_by_hand():
    # ranked: +, -, +, -  -> precision at the hits 1/1 and 2/3 -> AP = (1 + 2/3) / 2
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    assert average_precision(scores, torch.tensor([1, 0, 1, 0])) == pytest.approx(5 / 6)
    # a tie is one threshold: {0.5: +,-} gives P 1/2 at R 1/2, then P 2/3 at R 1
    tied = torch.tensor([0.5, 0.5, 0.2])
    assert average_precision(tied, torch.tensor([1, 0, 1])) == pytest.approx(0.25 + 1 / 3)
    assert math.isnan(average_precision(scores, torch.zeros(4)))
    two = torch.stack([scores, -scores], 1)  # class 1 ranks the other way: + last
    targets = torch.tensor([[1, 0], [0, 0], [1, 0], [0, 1]])
    assert mean_average_precision(two, targets) == pytest.approx((5 / 6 + 1.0) / 2)


def test_accuracy_and_confusion_matrix():
    scores = torch.tensor([[2.0, 1.0], [0.0, 1.0], [3.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert accuracy(scores, targets) == pytest.approx(1 / 3)
    assert confusion_matrix(scores, targets).tolist() == [[1, 1], [1, 0]]


def test_patch_shape_mismatch_is_an_error(pretrained):
    with pytest.raises(ValueError, match="patch shape"):
        ft._model(_ci(fshape=128, tshape=2, fstride=128, tstride=1), 4, pretrained)


def test_bad_configs():
    with pytest.raises(ValueError, match="scale"):
        FinetuneConfig.preset("esc10", "enormous")
    with pytest.raises(ValueError, match="loss"):
        FinetuneConfig(loss="hinge")
    with pytest.raises(ValueError, match="stride"):
        FinetuneConfig(fstride=20)


def test_cli_help_names_official_defaults(capsys):
    with pytest.raises(SystemExit):
        ft.main(["--help"])
    text = capsys.readouterr().out
    assert "--linear-probe" in text and "official: 1e-4 ESC-50" in text
