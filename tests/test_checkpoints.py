"""Checkpoints: official-format files (random values from the manifest), safe loading, saving."""

import csv
from pathlib import Path

import pytest
import torch

from conftest import RunsCode
from ssast_teach import checkpoints as C
from ssast_teach.checkpoints import CheckpointError, CheckpointNotFoundError

RESOURCES = Path(C.__file__).parent / "resources"
SLOW_BASE = pytest.mark.slow  # base size: 3-5 s on 2 shared CPU cores


def _save(sd, path):
    torch.save(sd, path)
    return path


@pytest.fixture(scope="module")
def tiny_patch(tmp_path_factory):
    """An official-format tiny patch pretraining checkpoint on disk (module. keys)."""
    return _save(C.make_official_like("tiny", "patch"), tmp_path_factory.mktemp("ck") / "tp.pth")


@pytest.fixture(scope="module")
def tiny_frame(tmp_path_factory):
    return _save(C.make_official_like("tiny", "frame"), tmp_path_factory.mktemp("ck") / "tf.pth")


# ----------------------------------------------------------------------------- official files


@pytest.mark.parametrize(
    ("size", "geometry"),
    [
        ("tiny", "patch"),
        ("tiny", "frame"),
        ("small", "patch"),
        ("small", "frame"),
        # Base once (the frame geometry differs only in patch_embed/pos_embed, covered above).
        pytest.param("base", "patch", marks=SLOW_BASE),
    ],
)
def test_official_like_loads_for_every_size_and_geometry(size, geometry, tmp_path):
    sd = C.make_official_like(size, geometry, seed=1)
    assert all(k.startswith("module.") for k in sd)
    model = C.load_pretrained(_save(sd, tmp_path / "ck.pth"))
    assert model.config.size == size
    fshape, tshape = (16, 16) if geometry == "patch" else (128, 2)
    assert (model.config.fshape, model.config.tshape) == (fshape, tshape)
    assert (model.config.input_fdim, model.config.input_tdim) == (128, 1024)
    out = model.state_dict()
    assert list(out) == [k.removeprefix("module.") for k in sd]
    for key, value in sd.items():
        assert torch.equal(out[key.removeprefix("module.")], value), key


def test_without_module_prefix_loads_too(tmp_path):
    sd = {k.removeprefix("module."): v for k, v in C.make_official_like("tiny").items()}
    model = C.load_pretrained(_save(sd, tmp_path / "plain.pth"))
    assert torch.equal(model.state_dict()["v.pos_embed"], sd["v.pos_embed"])
    assert C.inspect(tmp_path / "plain.pth").module_prefix is False


def test_load_state_dict_returns_tensors_without_prefix(tiny_patch):
    sd = C.load_state_dict(tiny_patch)
    assert "v.pos_embed" in sd and not any(k.startswith("module.") for k in sd)
    assert sd["p_input_tdim"].dtype == torch.int64 and int(sd["p_input_tdim"]) == 1024


@pytest.mark.parametrize(
    ("fixture", "input_tdim", "strides", "grid"),
    [
        ("tiny_patch", 100, (10, 10), (12, 9)),
        ("tiny_patch", 512, (10, 10), (12, 50)),
        ("tiny_frame", 128, (128, 1), (1, 127)),
    ],
)
def test_finetuning_geometries_adapt(fixture, input_tdim, strides, grid, request):
    path = request.getfixturevalue(fixture)
    model = C.load_for_finetuning(path, n_classes=35, input_tdim=input_tdim)
    assert (model.config.fstride, model.config.tstride) == strides
    assert (model.grid.f_dim, model.grid.t_dim) == grid
    pretrained = C.load_state_dict(path)
    assert torch.equal(model.v.patch_embed.proj.weight, pretrained["v.patch_embed.proj.weight"])
    assert model.v.pos_embed.shape == (1, 2 + grid[0] * grid[1], 192)
    with torch.no_grad():
        logits = model(torch.randn(2, input_tdim, 128))
    assert logits.shape == (2, 35)


def test_official_finetuned_checkpoint_loads(tiny_patch, tmp_path):
    ft = C.load_for_finetuning(tiny_patch, n_classes=10, input_tdim=100)
    path = C.save_official(ft, tmp_path / "ft.pth")  # the official fine-tuned layout
    back = C.load_for_finetuning(path, n_classes=10, input_tdim=100)
    for key, value in ft.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    assert C.load_for_finetuning(path, n_classes=None).n_classes == 10  # head size read from the file

    with pytest.raises(CheckpointError, match="10 classes.*new_head=True") as info:
        C.load_for_finetuning(path, n_classes=5, input_tdim=100)
    assert str(path) in str(info.value)
    fresh = C.load_for_finetuning(path, n_classes=5, input_tdim=100, new_head=True)
    assert fresh.mlp_head[1].out_features == 5
    assert torch.equal(fresh.v.pos_embed, ft.v.pos_embed)

    with pytest.raises(CheckpointError, match="108 patch positions"):
        C.load_for_finetuning(path, n_classes=10, input_tdim=512)


def test_pretrained_loader_refuses_finetuned_file(tiny_patch, tmp_path):
    ft = C.load_for_finetuning(tiny_patch, n_classes=3, input_tdim=100)
    path = C.save_official(ft, tmp_path / "ft.pth")
    with pytest.raises(CheckpointError, match="load_for_finetuning"):
        C.load_pretrained(path)


# ----------------------------------------------------------------------------- bad files


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pth"
    sd = dict(C.make_official_like("tiny"))
    sd["module.payload"] = RunsCode(marker)
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="refused.*code") as info:
        C.load_state_dict(path)
    assert str(path) in str(info.value)
    with pytest.raises(CheckpointError, match="refused"):
        C.load_pretrained(path)
    with pytest.raises(CheckpointError, match="refused"):
        C.inspect(path)
    assert not marker.exists()
    # The payload is real: the unsafe loader does run it.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_truncated_file(tiny_patch, tmp_path):
    data = tiny_patch.read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated") as info:
        C.load_pretrained(path)
    assert str(path) in str(info.value)


def test_missing_file():
    with pytest.raises(CheckpointNotFoundError, match="nowhere.pth") as info:
        C.load_pretrained("/nowhere/nowhere.pth")
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(FileNotFoundError):
        C.load_state_dict("/nowhere/nowhere.pth")


def test_wrong_pos_embed_shape_is_listed(tmp_path):
    sd = C.make_official_like("tiny")
    sd["module.v.pos_embed"] = torch.zeros(1, 500, 192)
    path = _save(sd, tmp_path / "wrong.pth")
    with pytest.raises(
        CheckpointError, match=r"v\.pos_embed.*\(1, 500, 192\).*\(1, 514, 192\)"
    ) as e:
        C.load_pretrained(path)
    assert str(path) in str(e.value)


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    sd = C.make_official_like("tiny")
    del sd["module.mask_embed"], sd["module.cpredlayer.2.weight"]
    sd["module.gpredlayer.3.weight"] = torch.zeros(192)
    path = _save(sd, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError) as info:
        C.load_pretrained(path)
    message = str(info.value)
    assert str(path) in message
    for key in ("mask_embed", "cpredlayer.2.weight", "gpredlayer.3.weight"):
        assert key in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            {
                "conv1.weight": torch.zeros(64, 3, 7, 7),
                "bn1.running_mean": torch.zeros(64),
                "fc.weight": torch.zeros(1000, 512),
            },
            r"not an SSAST checkpoint.*conv1\.weight",
        ),
        ({"anything": torch.zeros(3)}, "not an SSAST checkpoint"),
        ([torch.zeros(3)], "not a state dict.*list"),
        (torch.zeros(3), "not a state dict.*Tensor"),
        ({"v.pos_embed": torch.zeros(1), "epoch": 3}, "not a state dict.*epoch"),
    ],
    ids=["resnet", "random-dict", "list", "tensor", "not-tensors"],
)
def test_not_an_ssast_state_dict(content, expected, tmp_path):
    path = _save(content, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=expected) as info:
        C.load_pretrained(path)
    assert str(path) in str(info.value)


def test_mixed_prefix_is_an_error(tmp_path):
    sd = dict(C.make_official_like("tiny"))
    sd["mask_embed"] = sd.pop("module.mask_embed")
    with pytest.raises(CheckpointError, match="some keys start with 'module.'"):
        C.load_state_dict(_save(sd, tmp_path / "mixed.pth"))


# ----------------------------------------------------------------------------- writing


def test_save_official_round_trip(tiny_patch, tmp_path):
    model = C.load_pretrained(tiny_patch)
    path = C.save_official(model, tmp_path / "out" / "official.pth")
    raw = torch.load(path, weights_only=True)
    assert all(k.startswith("module.") for k in raw)
    assert list(raw) == list(C.make_official_like("tiny"))  # the official key order
    back = C.load_pretrained(path)
    for key, value in model.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    assert [p.name for p in path.parent.iterdir()] == ["official.pth"]  # no temp file left


def test_export_safetensors_round_trip(tiny_patch, tmp_path):
    model = C.load_pretrained(tiny_patch)
    from_model = C.export_safetensors(model, tmp_path / "m.safetensors")
    from_path = C.export_safetensors(tiny_patch, tmp_path / "p.safetensors")
    for path in (from_model, from_path):
        sd = C.load_state_dict(path)
        assert sd["p_input_fdim"].dtype == torch.int64 and sd["p_input_fdim"].dim() == 0
        back = C.load_pretrained(path)
        for key, value in model.state_dict().items():
            assert torch.equal(back.state_dict()[key], value), key
    assert C.inspect(from_model).fmt == "safetensors"


def test_library_checkpoint_round_trip(tiny_patch, tmp_path):
    ft = C.load_for_finetuning(tiny_patch, n_classes=4, input_tdim=100, pooling="cls")
    path = C.save_checkpoint(ft, tmp_path / "lib.pt", extra={"step": 7, "lr": [1e-4]})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "ssast-teach" and raw["extra"] == {"step": 7, "lr": [1e-4]}
    back = C.load_for_finetuning(path, n_classes=4)  # geometry from the stored config
    assert back.config == ft.config and back.pooling == "cls"
    for key, value in ft.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    with pytest.raises(CheckpointError, match="fstride=16"):
        C.load_for_finetuning(path, n_classes=4, fstride=16)

    model, extra = C.load_checkpoint(path)
    assert model.config == ft.config and extra == {"step": 7, "lr": [1e-4]}
    with pytest.raises(CheckpointError, match="not a ssast-teach checkpoint"):
        C.load_checkpoint(tiny_patch)

    pre = C.load_pretrained(tiny_patch)
    pre_path = C.save_checkpoint(pre, tmp_path / "pre.pt")
    assert C.load_pretrained(pre_path).config == pre.config
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lib.pt", "pre.pt"]


# ----------------------------------------------------------------------------- inspect


def test_inspect_pretraining(tiny_frame):
    s = C.inspect(tiny_frame)
    assert (s.kind, s.fmt, s.module_prefix, s.model_size) == (
        "pretraining",
        "official",
        True,
        "tiny",
    )
    assert (s.fshape, s.tshape, s.grid, s.num_patches) == (128, 2, (1, 512), 512)
    assert s.pretrain_input == (128, 1024)
    assert s.num_params == 6_046_290 and s.num_tensors == 166  # the official tiny pretraining state dict
    assert s.n_classes is None and len(s.heads) == 2
    text = str(s)
    for piece in (
        "pretraining",
        "tiny",
        "128 x 2",
        "1 x 512",
        "128 x 1024",
        "cpredlayer",
        "gpredlayer",
        "discriminative",
        "generative",
        "6,046,290",
        "prefix: yes",
    ):
        assert piece in text, piece


def test_inspect_finetuned(tiny_patch, tmp_path):
    ft = C.load_for_finetuning(tiny_patch, n_classes=50, input_tdim=512)
    s = C.inspect(C.save_checkpoint(ft, tmp_path / "ft.pt"))
    assert (s.kind, s.fmt, s.module_prefix) == ("fine-tuned", "ssast-teach", False)
    assert s.grid == (12, 50) and s.n_classes == 50 and s.pretrain_input is None
    assert "mlp_head (50 classes)" in str(s)


# ----------------------------------------------------------------------------- registry, CLI

README_NAMES = [
    "SSAST-Base-Patch-400",
    "SSAST-Base-Frame-400",
    "SSAST-Base-Patch-250",
    "SSAST-Base-Frame-250",
    "SSAST-Small-Patch-400",
    "SSAST-Tiny-Patch-400",
    "SSAST-Tiny-Frame-400",
    "audio_model_100m",
    "audio_model_dis",
    "audio_model_gen",
    "audio_model_as20k",
    "audio_model_as",
    "audio_model_librispeech",
]


def test_registry_matches_readme_and_csv():
    assert list(C.REGISTRY) == README_NAMES  # 7 released + 6 ablation files
    with open(RESOURCES / "published_results.csv", newline="") as f:
        rows = {r["model"]: r for r in csv.DictReader(f)}
    for name, info in C.REGISTRY.items():
        assert info.url.startswith("https://www.dropbox.com/s/") and info.url.endswith("?dl=1")
        assert f"/{info.filename}?" in info.url and info.filename == f"{name}.pth"
        row = rows[name]
        assert (info.fshape, info.tshape) == (int(row["fshape"]), int(row["tshape"]))
        assert info.masked_patches == int(row["masked_patches"])
        for task, value in info.published.items():
            assert value == (float(row[task]) if row[task] else None), (name, task)
    assert C.REGISTRY["SSAST-Tiny-Frame-400"].avg_speech is None  # "untested" in the README
    ablations = [i for i in C.REGISTRY.values() if i.kind == "ablation"]
    assert [i.ablation_id for i in ablations] == [1, 2, 3, 4, 5, 6]
    assert "masked patches: 100 instead of 400" in C.REGISTRY["audio_model_100m"].changes
    assert "objective: generative instead of joint" in C.REGISTRY["audio_model_gen"].changes
    assert "pretraining data: AudioSet-20K" in C.REGISTRY["audio_model_as20k"].changes


def test_registry_name_is_read_from_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SSAST_TEACH_CACHE", str(tmp_path))
    with pytest.raises(CheckpointNotFoundError, match="download SSAST-Tiny-Patch-400"):
        C.inspect("SSAST-Tiny-Patch-400")
    _save(C.make_official_like("tiny"), tmp_path / "SSAST-Tiny-Patch-400.pth")
    assert C.inspect("SSAST-Tiny-Patch-400").model_size == "tiny"
    assert C.load_pretrained("SSAST-Tiny-Patch-400").config.size == "tiny"


def test_cli_list_and_inspect(tiny_patch, capsys):
    assert C.main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in README_NAMES) and "ablation 3" in out
    assert C.main(["inspect", str(tiny_patch)]) == 0
    assert "8 x 64 = 512 patches" in capsys.readouterr().out
    assert C.main(["inspect", "/nowhere.pth"]) == 1
    assert "no such checkpoint file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        C.main(["--help"])
    assert info.value.code == 0 and "download" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        C.main(["download", "SSAST-Huge"])
