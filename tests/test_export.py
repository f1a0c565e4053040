"""ssast_teach.export (chapter 08): course models as Hugging Face transformers ASTs.

Skipped with a hint when transformers is absent (a failure under CI=true, see conftest.needs).
Models are ``tiny`` with random weights, every parameter perturbed so that a swapped or
misplaced tensor (two LayerNorms, two biases, the two strides) changes the outputs.
"""

from __future__ import annotations

import copy
import importlib.util
import json

import pytest
import torch

from conftest import DATA, needs
from ssast_teach import export
from ssast_teach.audio import FrontEnd, FrontEndConfig, load_audio
from ssast_teach.checkpoints import save_checkpoint
from ssast_teach.export import HFExportError
from ssast_teach.model import SSASTModel

HAVE_TRANSFORMERS = importlib.util.find_spec("transformers") is not None
LABELS = ["dog", "rain", "sea", "baby", "clock"]
# Unequal strides and a non-square grid: swapping frequency and time would change the outputs.
GEOMETRY = dict(n_classes=len(LABELS), fstride=10, tstride=12, input_tdim=64, pooling="cls")


@pytest.fixture(autouse=True)
def _transformers():
    needs(HAVE_TRANSFORMERS, "transformers", "install it with pip install -e '.[hf]'")


def _perturbed(model: SSASTModel) -> SSASTModel:
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point():
                p.add_(torch.randn_like(p) * 0.05)  # LayerNorm weights 1 +- 0.05, biases non-zero
    return model.eval()


@pytest.fixture(scope="module")
def classifier() -> SSASTModel:
    torch.manual_seed(1)
    pre = SSASTModel.for_pretraining("tiny", input_tdim=64)
    return _perturbed(SSASTModel.for_finetuning(pre, **GEOMETRY))  # 12 x 5 patches


@pytest.fixture(scope="module")
def mini_classifier() -> SSASTModel:
    """The course's laptop size (4 blocks of 64): for what tests the writing, not the numbers."""
    torch.manual_seed(4)
    pre = SSASTModel.for_pretraining("mini", input_tdim=64)
    return _perturbed(SSASTModel.for_finetuning(pre, **GEOMETRY))


@pytest.fixture(scope="module")
def probe(classifier) -> torch.Tensor:
    g = classifier.grid
    return torch.randn(3, g.input_tdim, g.input_fdim, generator=torch.Generator().manual_seed(2)) * 0.5


def test_classifier_logits_match(classifier, probe):
    hf = export.as_hf_classifier(classifier, LABELS)
    with torch.no_grad():
        ours, theirs = classifier(probe), hf(input_values=probe).logits  # (B, 5) each
    diff = float((ours - theirs).abs().max())
    assert diff < 5e-5, diff  # measured: about 6e-6, all of it the head norm's epsilon (below)
    assert hf.config.id2label == dict(enumerate(LABELS))
    assert hf.config.label2id == {name: i for i, name in enumerate(LABELS)}


def test_layer_norm_eps_decision(classifier, probe):
    """HF has one layer_norm_eps; the export takes the encoder's 1e-6 (25 norms, exact) over the
    head's 1e-5. Give the library's head 1e-6 too and the logits agree to float32 noise: the
    classifier's whole difference is that one epsilon."""
    hf = export.as_hf_classifier(classifier, LABELS)
    assert hf.config.layer_norm_eps == export.LAYER_NORM_EPS == 1e-6
    assert classifier.mlp_head[0].eps == export.HEAD_LAYER_NORM_EPS == 1e-5
    head_norm = classifier.mlp_head[0]
    with torch.no_grad():
        h = classifier.embed(probe, "cls")  # (B, D) mean of [CLS, DIST], HF's pooled output
        same_eps = torch.nn.functional.layer_norm(h, head_norm.normalized_shape, head_norm.weight,
                                                  head_norm.bias, 1e-6)
        ours = classifier.mlp_head[1](same_eps)  # (B, 5)
        theirs = hf(input_values=probe).logits
    assert float((ours - theirs).abs().max()) < 1e-6


def test_probe_guard_refuses_a_head_norm_on_a_near_constant_input(mini_classifier, tmp_path):
    """Where the head norm's input hardly varies the two epsilons differ a lot: the export's own
    probe measurement refuses it rather than writing a different classifier."""
    flat = copy.deepcopy(mini_classifier)
    with torch.no_grad():
        flat.v.norm.weight.mul_(0.003)  # pooled variance about 1e-5, near the epsilons
    hf = export.as_hf_classifier(flat, LABELS)
    assert export.max_difference(flat, hf) > export.CHECK_ATOL
    with pytest.raises(HFExportError, match="differ from the library's"):
        export.to_hf_classifier(flat, tmp_path / "never-written", labels=LABELS, norm_stats="esc50")
    assert not (tmp_path / "never-written").exists()


def test_encoder_hidden_states_match(classifier, probe):
    torch.manual_seed(3)
    pre = _perturbed(SSASTModel.for_pretraining("tiny", input_tdim=64))  # stride 16, 8 x 4
    for model in (pre, classifier):
        hf = export.as_hf_encoder(model)
        with torch.no_grad():
            out = hf(input_values=probe, output_hidden_states=True)
            diff = float((model.tokens(probe) - out.last_hidden_state).abs().max())
            assert diff < 1e-5, diff  # measured: 0 (the same kernels in the same order)
            # hidden_states[0] is the embedding; [i + 1] is block i's raw output
            for i in (0, 5):
                assert float((model.tokens(probe, layer=i) - out.hidden_states[i + 1]).abs().max()) < 1e-5


def test_save_pretrained_round_trip(classifier, probe, tmp_path):
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    out = export.to_hf_classifier(classifier, tmp_path / "hf", labels=LABELS,
                                  norm_stats=(-6.5, 5.5), source="unit test")
    assert {p.name for p in out.iterdir()} == {
        "config.json", "model.safetensors", "preprocessor_config.json", export.RECORD}
    model = AutoModelForAudioClassification.from_pretrained(out).eval()
    with torch.no_grad():
        back = model(input_values=probe).logits  # (B, 5)
        assert float((back - classifier(probe)).abs().max()) < 5e-5
    ast = model.audio_spectrogram_transformer  # the weights came back bit for bit
    assert torch.equal(ast.embeddings.position_embeddings, classifier.v.pos_embed)
    assert torch.equal(model.classifier.dense.weight, classifier.mlp_head[1].weight)
    c = model.config
    assert (c.patch_size, c.frequency_stride, c.time_stride) == (16, 10, 12)
    assert (c.num_mel_bins, c.max_length, c.hidden_size, c.num_hidden_layers) == (128, 64, 192, 12)
    assert c.id2label[4] == "clock" and c.label2id["dog"] == 0
    fe = AutoFeatureExtractor.from_pretrained(out)
    assert type(fe).__name__ == "ASTFeatureExtractor"
    assert (fe.sampling_rate, fe.num_mel_bins, fe.max_length) == (16000, 128, 64)
    assert (fe.do_normalize, fe.mean, fe.std) == (True, -6.5, 5.5)
    record = json.loads((out / export.RECORD).read_text())
    assert record["source"] == "unit test" and record["pooling"] == "cls"
    assert record["probe_max_abs_diff_logits"] < 5e-5


def test_writing_is_atomic_and_refuses_to_overwrite(mini_classifier, tmp_path, monkeypatch):
    classifier = mini_classifier
    out = tmp_path / "hf"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not empty"):
        export.to_hf_encoder(classifier, out, norm_stats="esc50")
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    export.to_hf_encoder(classifier, out, norm_stats="esc50", overwrite=True)
    assert not (out / "mine.txt").exists() and (out / "model.safetensors").is_file()
    (empty := tmp_path / "empty").mkdir()
    export.to_hf_encoder(classifier, empty, norm_stats="esc50")  # an empty directory is fine

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export, "write_json", fail)  # the last file of the directory
    with pytest.raises(OSError, match="disk full"):
        export.to_hf_encoder(classifier, tmp_path / "new", norm_stats="esc50")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "hf"]  # no half directory


CLIPS = [  # (shipped clip, frames, stats): cut, padded, and a 5 s clip padded to 512
    ("fsdd/recordings/0_jackson_0.wav", 48, "speechcommands"),
    ("speech_commands_mini/yes/439c84f4_nohash_1.wav", 128, "speechcommands"),
    ("esc10/001 - Dog bark/5-203128-A.ogg", 512, "esc50"),
]


@pytest.mark.parametrize(("clip", "frames", "stats"), CLIPS, ids=["cut", "padded", "esc10"])
def test_feature_extractor_matches_the_front_end(clip, frames, stats):
    """HF's ASTFeatureExtractor runs the same torchaudio kaldi fbank, zero-pads or cuts at the
    end and normalises with (x - mean) / (2 * std), as the library. The one difference: the
    library removes the waveform's mean first (kaldi then removes each frame's mean anyway),
    which changes rounding only: measured up to 6e-5, and 0 when HF gets the centred waveform."""
    path = DATA / clip
    model = SSASTModel.for_pretraining("mini", input_tdim=frames if frames % 16 == 0 else 64)
    fe = export.feature_extractor(model, stats)
    fe.max_length = frames
    ours = FrontEnd(FrontEndConfig(target_length=frames, norm_stats=stats))(path)  # (T, F)
    wave = load_audio(path)[0]  # (S,) at 16 kHz: the input HF's extractor expects
    theirs = torch.from_numpy(fe(wave.numpy(), sampling_rate=16000, return_tensors="np")["input_values"][0])
    assert theirs.shape == ours.shape == (frames, 128)
    assert float((ours - theirs).abs().max()) < 5e-4
    centred = (wave - wave.mean()).numpy()
    exact = torch.from_numpy(fe(centred, sampling_rate=16000, return_tensors="np")["input_values"][0])
    assert torch.equal(ours, exact)


def test_pipeline_classifies_a_course_clip_as_the_library(classifier, tmp_path):
    from transformers import pipeline

    out = export.to_hf_classifier(classifier, tmp_path / "hf", labels=LABELS, norm_stats="esc50")
    path = DATA / "esc10" / "001 - Dog bark" / "5-203128-A.ogg"
    wave = load_audio(path)[0].numpy()  # (S,) at 16 kHz
    top = pipeline("audio-classification", model=str(out))({"raw": wave, "sampling_rate": 16000},
                                                           top_k=len(LABELS))
    x = FrontEnd(FrontEndConfig(target_length=64, norm_stats="esc50"))(path)  # (64, 128)
    with torch.no_grad():
        probs = classifier(x[None]).softmax(-1)[0]  # (5,)
    assert top[0]["label"] == LABELS[int(probs.argmax())]
    for row in top:
        assert abs(row["score"] - float(probs[LABELS.index(row["label"])])) < 1e-4


@pytest.mark.parametrize("case", ["avgtok", "base_nokd", "frame", "non_square", "pretraining",
                                  "max_length"])
def test_what_hf_cannot_express_is_a_named_error(case, mini_classifier, tmp_path):
    classifier = mini_classifier
    to_classifier = case in ("avgtok", "pretraining")
    if case == "avgtok":
        model, match = SSASTModel(classifier.config, n_classes=5, pooling="avgtok"), "ft_cls"
    elif case == "base_nokd":
        model, match = SSASTModel.for_pretraining("base_nokd", input_tdim=16), "1 class token"
    elif case == "frame":
        model, match = SSASTModel.for_pretraining("mini", 128, 2, input_tdim=64), "128x2"
    elif case == "non_square":
        model, match = SSASTModel.for_pretraining("mini", 16, 8, input_tdim=64), "square"
    elif case == "pretraining":
        model, match = SSASTModel.for_pretraining("mini", input_tdim=64), "no classifier head"
    else:
        model, match = classifier, "max_length=128"
    with pytest.raises(HFExportError, match=match) as info:
        if to_classifier:
            export.to_hf_classifier(model, tmp_path / "never-written", labels=LABELS, norm_stats="esc50")
        else:
            export.to_hf_encoder(model, tmp_path / "never-written", norm_stats="esc50",
                                 max_length=128 if case == "max_length" else None)
    assert isinstance(info.value, ValueError)
    assert "Instead: " in str(info.value)  # says what to do
    assert not (tmp_path / "never-written").exists()


def test_command_line(mini_classifier, tmp_path, capsys):
    classifier = mini_classifier
    run = tmp_path / "run"
    ckpt = save_checkpoint(classifier, run / "finetuned.pth",
                           extra={"config": {"norm_stats": "speechcommands"}})
    (run / "results.json").write_text(json.dumps({"class_names": LABELS}))
    assert export.main(["classifier", str(ckpt), "--out", str(tmp_path / "hf")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == str(tmp_path / "hf")  # after the log line
    pre = tmp_path / "pre.pth"
    save_checkpoint(SSASTModel.for_pretraining("mini", input_tdim=64), pre)
    export.main(["encoder", str(pre), "--out", str(tmp_path / "enc"), "--mean", "-4", "--std", "4"])
    config = json.loads((tmp_path / "enc" / "preprocessor_config.json").read_text())
    assert (config["mean"], config["std"], config["max_length"]) == (-4.0, 4.0, 64)

    def error(*argv: str) -> str:
        with pytest.raises(SystemExit) as info:
            export.main(list(argv))
        return str(info.value)

    assert "missing.pth" in error("encoder", str(tmp_path / "missing.pth"), "--out", "x")
    message = error("classifier", str(pre), "--out", str(tmp_path / "x"))
    assert str(pre) in message and "no classifier head" in message
    assert "--norm-stats" in error("encoder", str(pre), "--out", str(tmp_path / "x"))
    assert "not empty" in error("classifier", str(ckpt), "--out", str(tmp_path / "hf"))
    (run / "results.json").unlink()
    assert "--labels" in error("classifier", str(ckpt), "--out", str(tmp_path / "y"))
    wrong = error("classifier", str(ckpt), "--out", str(tmp_path / "y"), "--labels", "a,b")
    assert "2 label names for a model with 5 classes" in wrong
    with pytest.raises(SystemExit) as info:
        export.main(["--help"])
    assert info.value.code == 0
