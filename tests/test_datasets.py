"""Course data, the official datafile format, synthetic data, FbankDataset and the recipes."""

import csv
import io
import json
import os
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import DATA, needs
from ssast_teach import datasets
from ssast_teach.audio import FrontEndConfig, load_audio
from ssast_teach.datasets import (
    PRETRAIN_MID,
    SYNTHETIC_KINDS,
    DataSplit,
    FbankDataset,
    data_dir,
    esc10,
    fsdd,
    load_datafile,
    make_synthetic_dataset,
    prepare_esc50,
    prepare_fsdd,
    prepare_speechcommands_v2,
    pretraining_mix,
    speech_commands_mini,
    synthetic_clip,
    synthetic_params,
)
from ssast_teach.download import DownloadError


@pytest.fixture
def course_data():
    needs(DATA.is_dir(), "the course data folder data/", "it ships with the repository")


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)), n=8 * len(x)))
    return float(np.argmax(spectrum) * sr / (8 * len(x)))


# --- shipped data -------------------------------------------------------------------------------


def test_every_shipped_clip_loads(course_data):
    expected = {"esc10": (400, 44100), "fsdd": (2000, 8000), "speech_commands_mini": (300, 16000)}
    splits = {
        "esc10": esc10(),
        "fsdd": fsdd("all"),
        "speech_commands_mini": speech_commands_mini("all"),
    }
    for name, split in splits.items():
        count, rate = expected[name]
        assert len(split) == count
        for item in split.items:
            x, sr = sf.read(item["wav"], dtype="float32", always_2d=True)
            assert sr == rate and x.shape[1] == 1 and x.shape[0] >= 0.025 * sr, item["wav"]
            assert np.isfinite(x).all(), item["wav"]
        for item in split.items[:: count // 5]:
            w = load_audio(item["wav"])
            assert w.shape[0] == 1 and w.shape[1] >= 400


def test_split_sizes(course_data):
    everything = esc10()
    assert len(everything) == 400 and len(everything.labels) == 10
    assert Counter(item["labels"] for item in everything.items) == {
        mid: 40 for _, mid, _ in everything.labels
    }
    assert everything.labels[0] == (0, "/esc10/dog_bark", "Dog bark")
    assert everything.labels[9] == (9, "/esc10/fire_crackling", "Fire crackling")
    folds = [esc10([k]) for k in range(1, 6)]
    assert [len(f) for f in folds] == [80] * 5
    assert len(esc10([1, 2, 3, 4])) == 320
    assert set().union(*({i["wav"] for i in f.items} for f in folds)) == {
        i["wav"] for i in everything.items
    }
    with pytest.raises(ValueError, match="folds"):
        esc10([0])

    train, test = fsdd("train"), fsdd("test")
    assert (len(train), len(test)) == (1800, 200)
    assert all(int(Path(i["wav"]).stem.split("_")[2]) < 5 for i in test.items)
    assert fsdd("train").labels[7] == (7, "/fsdd/seven", "seven")
    assert Counter(i["labels"] for i in test.items) == {
        f"/fsdd/{w}": 20 for w in datasets.FSDD_DIGITS
    }

    sc = {s: speech_commands_mini(s) for s in ("train", "validation", "test", "all")}
    assert [len(sc[s]) for s in ("train", "validation", "test", "all")] == [205, 44, 51, 300]
    assert len(sc["all"].labels) == 30
    test_list = (DATA / "speech_commands_mini" / "testing_list.txt").read_text().split()
    for item in sc["test"].items:
        assert "/".join(Path(item["wav"]).parts[-2:]) in test_list
    with pytest.raises(ValueError, match="split"):
        speech_commands_mini("testing")


def test_data_dir_env_and_missing_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("SSAST_TEACH_DATA", str(tmp_path))
    assert data_dir() == tmp_path
    monkeypatch.setenv("SSAST_TEACH_DATA", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="SSAST_TEACH_DATA"):
        data_dir()


def test_pretraining_mix_composition(course_data):
    both = pretraining_mix()
    audio, speech = pretraining_mix("audio"), pretraining_mix("speech")
    assert (len(audio), len(speech), len(both)) == (400, 1800 + 205, 2405)
    assert both.labels == [(0, PRETRAIN_MID, "Speech")]
    assert {i["labels"] for i in both.items} == {PRETRAIN_MID}
    assert all(i["wav"].endswith(".ogg") for i in both.items[:400])  # audio first, as official
    assert not any(i["wav"].endswith(".ogg") for i in both.items[400:])
    held_out = (
        {i["wav"] for i in fsdd("test").items}
        | {i["wav"] for i in speech_commands_mini("test").items}
        | {i["wav"] for i in speech_commands_mini("validation").items}
    )
    assert not held_out & {i["wav"] for i in speech.items}
    assert len(pretraining_mix("audio", esc10_folds=[1, 2, 3, 4])) == 320
    assert len(pretraining_mix("speech", fsdd_split="all", speech_commands_split="all")) == 2300
    assert pretraining_mix(seed=1).items == pretraining_mix(seed=1).items
    assert pretraining_mix(seed=1).items != pretraining_mix(seed=2).items
    assert sorted(i["wav"] for i in both.items) == sorted(
        i["wav"] for i in pretraining_mix(seed=None).items
    )
    with pytest.raises(ValueError, match="sources"):
        pretraining_mix("music")


# --- datafile format ----------------------------------------------------------------------------


def test_datafile_and_label_csv_round_trip(tmp_path):
    labels = [(0, "/x/dog", "Dog"), (1, "/x/odd", 'Odd, "quoted" name')]
    split = DataSplit(
        "demo",
        [
            {"wav": str(tmp_path / "a.wav"), "labels": "/x/dog"},
            {"wav": "rel/b.wav", "labels": "/x/dog,/x/odd"},
        ],
        labels,
    )
    split.to_datafile(tmp_path / "demo.json")
    split.write_label_csv(tmp_path / "labels.csv")
    assert json.loads((tmp_path / "demo.json").read_text()) == {"data": split.items}
    lines = (tmp_path / "labels.csv").read_text().splitlines()
    assert lines[:2] == ["index,mid,display_name", '0,/x/dog,"Dog"']
    with open(tmp_path / "labels.csv", newline="") as f:  # as the official make_index_dict reads
        assert {r["mid"]: r["index"] for r in csv.DictReader(f)} == {"/x/dog": "0", "/x/odd": "1"}
    back = load_datafile(tmp_path / "demo.json", tmp_path / "labels.csv")
    assert back.labels == labels and back.name == "demo"
    assert back.items[0] == split.items[0]
    assert back.items[1]["wav"] == str(tmp_path / "rel" / "b.wav")
    assert not list(tmp_path.glob(".*.tmp"))

    (tmp_path / "bad.json").write_text(json.dumps({"data": [{"wav": "a", "labels": "/x/cat"}]}))
    with pytest.raises(ValueError, match="/x/cat"):
        load_datafile(tmp_path / "bad.json", tmp_path / "labels.csv")
    (tmp_path / "notjson.json").write_text("{")
    with pytest.raises(ValueError, match="notjson.json"):
        load_datafile(tmp_path / "notjson.json", tmp_path / "labels.csv")


# --- synthetic data -----------------------------------------------------------------------------


def test_synthetic_clips_are_seeded_with_known_answers():
    for kind in SYNTHETIC_KINDS:
        x = synthetic_clip(kind, seed=4)
        assert x.shape == (1, 16000) and x.dtype == torch.float32
        assert float(x.abs().max()) == pytest.approx(0.5)
        assert torch.equal(x, synthetic_clip(kind, seed=4))
        assert not torch.equal(x, synthetic_clip(kind, seed=5))
    sr = 16000
    for seed in range(3):
        p = synthetic_params("chirp", seed=seed)
        assert 450 <= p["start_hz"] <= 550 and 3600 <= p["end_hz"] <= 4400
        x = synthetic_clip("chirp", seed=seed)[0].numpy()
        assert _peak_hz(x[:320], sr) == pytest.approx(p["start_hz"], abs=60)  # first 20 ms
        assert _peak_hz(x[-320:], sr) == pytest.approx(p["end_hz"], abs=120)
        f0 = synthetic_params("harmonic", seed=seed)["f0_hz"]
        assert 150 <= f0 <= 300
        assert _peak_hz(synthetic_clip("harmonic", seed=seed)[0].numpy(), sr) == pytest.approx(
            f0, abs=2
        )
        clicks = synthetic_params("clicks", seed=seed)
        x = synthetic_clip("clicks", seed=seed)[0].numpy()
        onsets = np.flatnonzero(np.diff((x != 0).astype(int)) == 1) + 1
        assert len(onsets) == len(clicks["click_s"]) >= 4
        assert np.allclose(onsets / sr, clicks["click_s"], atol=2 / sr)
    noise = synthetic_clip("noise", seconds=2.0, seed=1)[0]
    assert abs(float(noise.mean())) < 0.01 and synthetic_params("noise") == {}
    with pytest.raises(ValueError, match="kind"):
        synthetic_clip("speech")


def test_make_synthetic_dataset(tmp_path):
    split = make_synthetic_dataset(tmp_path / "a", n_per_class=2, seconds=0.5, seed=3)
    again = make_synthetic_dataset(tmp_path / "b", n_per_class=2, seconds=0.5, seed=3)
    assert len(split) == 8 and [row[2] for row in split.labels] == list(SYNTHETIC_KINDS)
    for x, y in zip(split.items, again.items, strict=True):
        assert Path(x["wav"]).read_bytes() == Path(y["wav"]).read_bytes()
        assert sf.info(x["wav"]).samplerate == 16000 and sf.info(x["wav"]).frames == 8000
    back = load_datafile(
        tmp_path / "a" / "synthetic_data.json",
        tmp_path / "a" / "synthetic_class_labels_indices.csv",
    )
    assert back.items == split.items and back.labels == split.labels


# --- FbankDataset -------------------------------------------------------------------------------


@pytest.fixture
def synthetic(tmp_path):
    return make_synthetic_dataset(tmp_path / "synth", n_per_class=2, seconds=0.5, seed=0)


def test_fbank_dataset_shapes_and_labels(synthetic):
    cfg = FrontEndConfig(target_length=64, norm_stats=(-6.0, 5.0))
    ds = FbankDataset(synthetic, cfg)
    x, y = ds[5]
    assert x.shape == (64, 128) and y.shape == (4,) and y.dtype == torch.float32
    assert torch.equal(y, torch.tensor([0.0, 0.0, 1.0, 0.0]))  # items 4-5 are clicks
    assert torch.equal(ds[5][0], x)  # evaluation is deterministic
    loader = torch.utils.data.DataLoader(ds, batch_size=4)
    xb, yb = next(iter(loader))
    assert xb.shape == (4, 64, 128) and yb.shape == (4, 4)

    multi = DataSplit(
        "multi",
        [{"wav": synthetic.items[0]["wav"], "labels": "/synthetic/chirp,/synthetic/noise"}],
        synthetic.labels,
    )
    assert torch.equal(FbankDataset(multi, cfg)[0][1], torch.tensor([1.0, 0.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="/synthetic/speech"):
        FbankDataset(
            DataSplit("bad", [{"wav": "a.wav", "labels": "/synthetic/speech"}], synthetic.labels)
        )

    mixing = FbankDataset(synthetic, FrontEndConfig(target_length=64, mixup=1.0), training=True)
    for i in range(4):
        x, y = mixing[i]
        assert x.shape == (64, 128) and float(y.sum()) == pytest.approx(1.0)
        assert 1 <= int((y > 0).sum()) <= 2 and float(y.min()) >= 0  # lam and 1 - lam

    esc = FrontEndConfig.for_dataset("esc50", target_length=64)
    augmented = FbankDataset(synthetic, esc, training=True, cache=True)
    raw = augmented.raw_fbank(0).clone()
    assert not torch.equal(augmented[0][0], augmented[0][0])  # drawn afresh after the cache
    assert torch.equal(augmented.raw_fbank(0), raw)  # and the cached fbank is left untouched


def test_fbank_cache_hit_gives_identical_features(synthetic, tmp_path, monkeypatch):
    cfg = FrontEndConfig(target_length=64)
    plain = FbankDataset(synthetic, cfg)
    cached = FbankDataset(synthetic, cfg, cache_dir=tmp_path / "cache")
    first = [cached[i][0] for i in range(len(cached))]
    assert len(list((tmp_path / "cache").glob("*.npy"))) == len(synthetic)
    for i in range(len(plain)):
        assert torch.equal(first[i], plain[i][0])

    def no_decoding(*args, **kwargs):
        raise AssertionError("cache miss")

    fresh = FbankDataset(synthetic, cfg, cache_dir=tmp_path / "cache")  # disk hit
    monkeypatch.setattr(fresh.frontend, "raw_fbank", no_decoding)
    assert all(torch.equal(fresh[i][0], first[i]) for i in range(len(fresh)))
    memory = FbankDataset(synthetic, cfg, cache=True)
    memory[0]
    monkeypatch.setattr(memory.frontend, "raw_fbank", no_decoding)
    assert torch.equal(memory[0][0], first[0])  # memory hit

    wav = Path(synthetic.items[0]["wav"])
    stat = wav.stat()
    os.utime(wav, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a changed file is re-read
    with pytest.raises(AssertionError, match="cache miss"):
        fresh[0]
    other = FbankDataset(
        synthetic, FrontEndConfig(target_length=64, num_mel_bins=64), cache_dir=tmp_path / "cache"
    )
    assert other[1][0].shape == (64, 64)


# --- recipes: the prepare step on fake archives -------------------------------------------------


def _wav_bytes(seconds=0.1, sr=16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(int(seconds * sr), np.float32), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_prepare_esc50_from_a_present_archive(tmp_path):
    rows = [
        ("1-1-A-0.wav", 1, 0, "dog"),
        ("2-2-A-1.wav", 2, 1, "rooster"),
        ("3-3-A-0.wav", 3, 0, "dog"),
        ("5-5-A-1.wav", 5, 1, "rooster"),
    ]
    meta = "filename,fold,target,category,esc10,src_file,take\n" + "".join(
        f"{f},{fold},{t},{c},True,{fold},A\n" for f, fold, t, c in rows
    )
    with zipfile.ZipFile(tmp_path / "ESC-50-master.zip", "w") as z:
        z.writestr("ESC-50-master/meta/esc50.csv", meta)
        for f, *_ in rows:
            z.writestr(f"ESC-50-master/audio/{f}", _wav_bytes())
    splits = prepare_esc50(tmp_path)
    assert sorted(splits) == sorted(
        f"esc_{kind}_data_{k}" for kind in ("train", "eval") for k in range(1, 6)
    )
    assert (len(splits["esc_train_data_1"]), len(splits["esc_eval_data_1"])) == (3, 1)
    assert len(splits["esc_eval_data_4"]) == 0
    back = load_datafile(
        tmp_path / "datafiles" / "esc_eval_data_5.json", tmp_path / "esc_class_labels_indices.csv"
    )
    assert back.items == [
        {"wav": str(tmp_path / "ESC-50-master" / "audio" / "5-5-A-1.wav"), "labels": "/m/07rwj01"}
    ]
    assert back.labels == [(0, "/m/07rwj00", "dog"), (1, "/m/07rwj01", "rooster")]
    assert load_audio(back.items[0]["wav"]).shape == (1, 1600)
    assert prepare_esc50(tmp_path).keys() == splits.keys()  # second run reuses the folder


def test_prepare_speechcommands_v2_from_a_present_archive(tmp_path):
    files = {
        "yes/a_nohash_0.wav",
        "yes/b_nohash_0.wav",
        "yes/c_nohash_0.wav",
        "no/a_nohash_0.wav",
        "no/d_nohash_0.wav",
        "_background_noise_/white.wav",
    }
    with tarfile.open(tmp_path / "speech_commands_v0.02.tar.gz", "w:gz") as t:
        for name, data in [
            *((f, _wav_bytes()) for f in files),
            ("validation_list.txt", b"yes/b_nohash_0.wav\n"),
            ("testing_list.txt", b"no/d_nohash_0.wav\nyes/c_nohash_0.wav\n"),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    splits = prepare_speechcommands_v2(tmp_path)
    sizes = {name: len(s) for name, s in splits.items()}
    assert sizes == {
        "speechcommand_train_data": 2,
        "speechcommand_valid_data": 1,
        "speechcommand_eval_data": 2,
    }
    assert splits["speechcommand_train_data"].labels == [
        (0, "/speechcommands/no", "no"),
        (1, "/speechcommands/yes", "yes"),
    ]
    assert (tmp_path / "datafiles" / "speechcommand_eval_data.json").is_file()
    assert (tmp_path / "speechcommands_class_labels_indices.csv").is_file()


def test_prepare_fsdd_from_a_present_folder_and_offline_error(tmp_path, monkeypatch):
    recordings = tmp_path / "free-spoken-digit-dataset-master" / "recordings"
    recordings.mkdir(parents=True)
    for name in ("3_lucas_0.wav", "3_lucas_7.wav", "9_george_4.wav", "9_george_49.wav"):
        (recordings / name).write_bytes(_wav_bytes(sr=8000))
    splits = prepare_fsdd(tmp_path)
    assert {n: len(s) for n, s in splits.items()} == {"fsdd_train_data": 2, "fsdd_test_data": 2}

    def offline(url, dest, **kwargs):
        raise DownloadError(f"Could not download {url}. Save it as {dest}")

    monkeypatch.setattr(datasets, "download_file", offline)
    with pytest.raises(DownloadError) as info:
        prepare_fsdd(tmp_path / "elsewhere")
    message = str(info.value)
    assert datasets.FSDD_URL in message and "free-spoken-digit-dataset-master.zip" in message
    assert (
        str(tmp_path / "elsewhere" / "free-spoken-digit-dataset-master" / "recordings") in message
    )
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "ESC-50-master.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a valid archive"):
        prepare_esc50(tmp_path / "broken")
    assert [p.name for p in (tmp_path / "broken").iterdir()] == ["ESC-50-master.zip"]
