"""Course data, the official datafile format, synthetic data, FbankDataset and the recipes."""

import csv
import hashlib
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
from local_http import FileServer

from conftest import DATA, needs
from ssast_teach import datasets
from ssast_teach.audio import FrontEndConfig, load_audio
from ssast_teach.datasets import (
    EVALUATION_SPLITS,
    PRETRAIN_MID,
    SYNTHETIC_KINDS,
    DataSplit,
    FbankDataset,
    UnsafeArchiveError,
    data_dir,
    esc10,
    evaluation_splits,
    fsdd,
    fsdd_speaker,
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
from ssast_teach.download import DownloadError, IntegrityError, git_blob_sha1


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


def test_evaluation_splits_test_every_clip_once(course_data):
    folds = {name: evaluation_splits(name) for name in EVALUATION_SPLITS}
    counts = {name: [(fold, len(tr), len(te)) for fold, tr, te in f] for name, f in folds.items()}
    assert counts == {
        "esc10_cv": [(f"fold{k}", 320, 80) for k in range(1, 6)],
        "fsdd_standard": [("standard", 1800, 200)],
        "fsdd_speakers": [(f"speaker_{s}", 1500, 500)
                          for s in ("jackson", "nicolas", "theo", "yweweler")],
        "speech_commands_mini": [("test", 205, 51)],
    }
    every = {"esc10_cv": esc10(), "fsdd_standard": fsdd("all"), "fsdd_speakers": fsdd("all"),
             "speech_commands_mini": speech_commands_mini("all")}
    for name, split_folds in folds.items():
        tested = Counter(item["wav"] for _, _, test in split_folds for item in test.items)
        if name in ("esc10_cv", "fsdd_speakers"):  # cross-validation: every clip tested once
            assert tested == Counter(item["wav"] for item in every[name].items), name
        else:
            assert max(tested.values()) == 1, name
        for _, train, test in split_folds:
            assert not {i["wav"] for i in train.items} & {i["wav"] for i in test.items}, name
            assert train.labels == test.labels == every[name].labels, name
    validation = {i["wav"] for i in speech_commands_mini("validation").items}
    _, train, test = folds["speech_commands_mini"][0]
    assert not validation & {i["wav"] for i in train.items + test.items}  # in neither side
    with pytest.raises(ValueError, match="esc10_cv"):
        evaluation_splits("esc50_cv")


def test_speaker_folds_never_share_a_speaker(course_data):
    for fold, train, test in evaluation_splits("fsdd_speakers"):
        speakers = {fsdd_speaker(i["wav"]) for i in test.items}
        assert speakers == {fold.removeprefix("speaker_")}
        assert speakers.isdisjoint(fsdd_speaker(i["wav"]) for i in train.items)
        assert Counter(i["labels"] for i in test.items) == {mid: 50 for _, mid, _ in test.labels}
    assert fsdd_speaker("/x/7_theo_12.wav") == "theo"
    with pytest.raises(ValueError, match="not an FSDD recording name"):
        fsdd_speaker("theo.wav")


def test_evaluation_splits_read_the_speakers_present(tmp_path):
    recordings = tmp_path / "fsdd" / "recordings"
    recordings.mkdir(parents=True)
    for name in ("0_ann_0.wav", "1_ann_7.wav", "0_bob_3.wav", "2_cy_9.wav", "notes.txt"):
        (recordings / name).touch()
    folds = evaluation_splits("fsdd_speakers", data=tmp_path)
    assert [(f, len(tr), len(te)) for f, tr, te in folds] == [
        ("speaker_ann", 2, 2), ("speaker_bob", 3, 1), ("speaker_cy", 3, 1)]


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


# --- recipes: verified downloads on fake archives and a local HTTP server -----------------------

COMMIT = "0123456789abcdef0123456789abcdef01234567"
FSDD_MANIFEST = json.loads(
    (Path(datasets.__file__).parent / "resources" / "fsdd_manifest.json").read_text()
)


def _wav_bytes(seconds=0.1, sr=16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(int(seconds * sr), np.float32), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _zip(files: dict[str, bytes], top: str = "") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(f"{top}/{name}" if top else name, data)
    return buf.getvalue()


def _tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _pin(monkeypatch, manifest: str, repository: str, files: dict[str, str], commit=COMMIT):
    """Recipes read ``manifest`` as pinning ``files`` ({path: blob id}) at ``repository``."""
    fake = {"repository": repository, "commit": commit, "files": files}
    real = datasets._pinned
    monkeypatch.setattr(datasets, "_pinned", lambda name: fake if name == manifest else real(name))
    return f"{repository.rsplit('/', 1)[1]}-{commit}"


def _rejected(folder: Path, name: str) -> list[Path]:
    return sorted(folder.glob(f"{name}.rejected-*"))


def test_shipped_fsdd_recordings_match_the_pinned_manifest(course_data):
    # The manifest is `git ls-tree -r` of the pinned commit: every shipped recording (copied from
    # that repository) must have its blob id there.
    files = FSDD_MANIFEST["files"]
    assert len(files) == 3000 and all(p.startswith("recordings/") for p in files)
    assert len(FSDD_MANIFEST["commit"]) == 40
    shipped = sorted((DATA / "fsdd" / "recordings").glob("*.wav"))
    assert len(shipped) == 2000
    assert {p.name: git_blob_sha1(p) for p in shipped} == {
        p.name: files[f"recordings/{p.name}"] for p in shipped
    }


def test_git_blob_sha1_is_gits_blob_id(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "hello").write_bytes(b"hello\n")
    assert git_blob_sha1(tmp_path / "empty") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    assert git_blob_sha1(tmp_path / "hello") == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_prepare_esc50_from_a_present_archive(tmp_path, monkeypatch):
    rows = [
        ("1-1-A-0.wav", 1, 0, "dog"),
        ("2-2-A-1.wav", 2, 1, "rooster"),
        ("3-3-A-0.wav", 3, 0, "dog"),
        ("5-5-A-1.wav", 5, 1, "rooster"),
    ]
    meta = "filename,fold,target,category,esc10,src_file,take\n" + "".join(
        f"{f},{fold},{t},{c},True,{fold},A\n" for f, fold, t, c in rows
    )
    files = {"meta/esc50.csv": meta.encode(), **{f"audio/{f}": _wav_bytes() for f, *_ in rows}}
    top = _pin(
        monkeypatch,
        "esc50_manifest.json",
        "https://github.com/karolpiczak/ESC-50",
        {p: _blob(d) for p, d in files.items()},
    )
    (tmp_path / f"{top}.zip").write_bytes(_zip(files, top))
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
        {"wav": str(tmp_path / top / "audio" / "5-5-A-1.wav"), "labels": "/m/07rwj01"}
    ]
    assert back.labels == [(0, "/m/07rwj00", "dog"), (1, "/m/07rwj01", "rooster")]
    assert load_audio(back.items[0]["wav"]).shape == (1, 1600)
    (tmp_path / f"{top}.zip").unlink()
    assert prepare_esc50(tmp_path).keys() == splits.keys()  # second run: the verified folder


def test_a_missing_manifest_is_an_error_naming_it():
    with pytest.raises(FileNotFoundError, match="resources/nothing_manifest.json is missing"):
        datasets._pinned("nothing_manifest.json")


def test_prepare_fsdd_downloads_and_verifies_real_recordings(course_data, tmp_path, monkeypatch):
    # Real bytes, real blob ids: 12 shipped recordings under the real pinned manifest.
    names = [f"recordings/{d}_{who}_{take}.wav" for d in (3, 7) for who in ("jackson", "theo")
             for take in (0, 4, 30)]
    files = {n: (DATA / "fsdd" / n).read_bytes() for n in names}
    commit = FSDD_MANIFEST["commit"]
    with FileServer({}) as server:
        repository = server.url("/Jakobovski/free-spoken-digit-dataset")
        pins = {n: FSDD_MANIFEST["files"][n] for n in names}
        top = _pin(monkeypatch, "fsdd_manifest.json", repository, pins, commit)
        archive_path = f"/Jakobovski/free-spoken-digit-dataset/archive/{commit}.zip"
        server.files[archive_path] = _zip(files, top)
        splits = prepare_fsdd(tmp_path)
        assert {n: len(s) for n, s in splits.items()} == {"fsdd_train_data": 4, "fsdd_test_data": 8}
        assert server.requests == [archive_path]
        assert (tmp_path / "datafiles" / "fsdd_test_data.json").is_file()

        # A file put in the folder later is not verified: left out.
        extra = tmp_path / top / "recordings" / "5_nobody_9.wav"
        extra.write_bytes(_wav_bytes(sr=8000))
        splits = prepare_fsdd(tmp_path)
        assert len(splits["fsdd_train_data"]) == 4 and server.requests == [archive_path]
        assert extra.exists()

        # A changed file: the folder is moved aside (kept) and unpacked again from the archive.
        changed = tmp_path / top / "recordings" / "3_theo_30.wav"
        changed.write_bytes(b"mine")
        prepare_fsdd(tmp_path)
        (aside,) = _rejected(tmp_path, top)
        assert (aside / "recordings" / "3_theo_30.wav").read_bytes() == b"mine"
        assert changed.read_bytes() == files["recordings/3_theo_30.wav"]
        assert server.requests == [archive_path]

        # A bad archive already there (and no folder): moved aside, downloaded again.
        aside.rename(tmp_path / "kept")
        os.replace(tmp_path / top, tmp_path / "kept2")
        good = (tmp_path / f"{top}.zip").read_bytes()
        (tmp_path / f"{top}.zip").write_bytes(good[: len(good) // 2])
        prepare_fsdd(tmp_path)
        (bad,) = _rejected(tmp_path, f"{top}.zip")
        assert bad.read_bytes() == good[: len(good) // 2]
        assert (tmp_path / f"{top}.zip").read_bytes() == good
        assert server.requests == [archive_path] * 2


def test_a_download_with_wrong_contents_is_moved_aside_and_reported(tmp_path, monkeypatch):
    files = {"recordings/1_a_0.wav": _wav_bytes(sr=8000), "recordings/2_a_7.wav": _wav_bytes()}
    pins = {p: _blob(d) for p, d in files.items()}
    with FileServer({}) as server:
        top = _pin(monkeypatch, "fsdd_manifest.json", server.url("/o/fsdd"), pins)
        wrong = {**files, "recordings/2_a_7.wav": b"corrupted"}
        server.files[f"/o/fsdd/archive/{COMMIT}.zip"] = _zip(wrong, top)
        with pytest.raises(IntegrityError) as info:
            prepare_fsdd(tmp_path)
    message = str(info.value)
    found = _blob(b"corrupted")
    assert f"recordings/2_a_7.wav: expected blob {pins['recordings/2_a_7.wav']}, found {found}" in (
        message
    )
    (aside,) = _rejected(tmp_path, f"{top}.zip")
    assert str(aside) in message and aside.read_bytes() == _zip(wrong, top)
    assert sorted(p.name for p in tmp_path.iterdir()) == [aside.name]  # nothing unpacked


def test_prepare_fsdd_offline_and_broken_archive_errors(tmp_path, monkeypatch):
    pins = {"recordings/3_lucas_0.wav": _blob(b"x")}
    top = _pin(monkeypatch, "fsdd_manifest.json", "https://github.com/o/fsdd", pins)

    def offline(url, dest, **kwargs):
        raise DownloadError(f"Could not download {url}. Save it as {dest}")

    monkeypatch.setattr(datasets, "download_file", offline)
    with pytest.raises(DownloadError) as info:
        prepare_fsdd(tmp_path / "elsewhere")
    message = str(info.value)
    assert f"https://github.com/o/fsdd/archive/{COMMIT}.zip" in message
    assert str(tmp_path / "elsewhere" / f"{top}.zip") in message

    # A broken archive already there is moved aside (kept), then fetched again.
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / f"{top}.zip").write_bytes(b"not a zip")
    with pytest.raises(DownloadError, match="Could not download"):
        prepare_fsdd(tmp_path / "broken")
    (aside,) = _rejected(tmp_path / "broken", f"{top}.zip")
    assert aside.read_bytes() == b"not a zip"
    assert [p.name for p in (tmp_path / "broken").iterdir()] == [aside.name]


SC_FILES = {
    "yes/a_nohash_0.wav": _wav_bytes(),
    "yes/b_nohash_0.wav": _wav_bytes(),
    "yes/c_nohash_0.wav": _wav_bytes(),
    "no/a_nohash_0.wav": _wav_bytes(),
    "no/d_nohash_0.wav": _wav_bytes(),
    "_background_noise_/white.wav": _wav_bytes(),
    "validation_list.txt": b"yes/b_nohash_0.wav\n",
    "testing_list.txt": b"no/d_nohash_0.wav\nyes/c_nohash_0.wav\n",
}


def _pin_speech_commands(monkeypatch, archive: bytes, url: str = "http://127.0.0.1:9/sc.tgz"):
    monkeypatch.setattr(datasets, "SPEECHCOMMANDS_V2_URL", url)
    monkeypatch.setattr(datasets, "SPEECHCOMMANDS_V2_SIZE", len(archive))
    monkeypatch.setattr(datasets, "SPEECHCOMMANDS_V2_SHA256", hashlib.sha256(archive).hexdigest())


def test_prepare_speechcommands_v2_from_a_present_archive(tmp_path, monkeypatch):
    archive = _tar_gz(SC_FILES)
    _pin_speech_commands(monkeypatch, archive)
    (tmp_path / "speech_commands_v0.02.tar.gz").write_bytes(archive)
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
    # The blob ids of the verified archive's files are kept with them, and checked next time.
    base = tmp_path / "speech_commands_v0.02"
    record = json.loads((base / ".ssast-teach-files.json").read_text())["files"]
    assert record == {p: _blob(d) for p, d in SC_FILES.items()}
    (base / "testing_list.txt").write_text("yes/a_nohash_0.wav\n")  # would move a clip to test
    assert prepare_speechcommands_v2(tmp_path)["speechcommand_eval_data"].items == splits[
        "speechcommand_eval_data"
    ].items
    (aside,) = _rejected(tmp_path, "speech_commands_v0.02")
    assert (aside / "testing_list.txt").read_text() == "yes/a_nohash_0.wav\n"


def test_speechcommands_archive_is_checked_by_size_and_sha256(tmp_path, monkeypatch):
    archive = _tar_gz(SC_FILES)
    with FileServer({"/sc.tgz": archive}) as server:
        _pin_speech_commands(monkeypatch, archive, server.url("/sc.tgz"))
        # A wrong archive already there: moved aside and downloaded again.
        (tmp_path / "speech_commands_v0.02.tar.gz").write_bytes(b"my own file")
        prepare_speechcommands_v2(tmp_path)
        (aside,) = _rejected(tmp_path, "speech_commands_v0.02.tar.gz")
        assert aside.read_bytes() == b"my own file"
        assert server.requests == ["/sc.tgz"]

        # A corrupted download (same size, other bytes): moved aside, an error, nothing used.
        server.files["/sc.tgz"] = archive[:-1] + bytes([archive[-1] ^ 1])
        with pytest.raises(IntegrityError, match="Checksum mismatch") as info:
            prepare_speechcommands_v2(tmp_path / "again")
    message = str(info.value)
    assert f"expected sha256 {hashlib.sha256(archive).hexdigest()}, found " in message
    (aside,) = _rejected(tmp_path / "again", "speech_commands_v0.02.tar.gz")
    assert str(aside) in message and aside.read_bytes() == server.files["/sc.tgz"]
    assert [p.name for p in (tmp_path / "again").iterdir()] == [aside.name]


# --- unpacking refuses members that would land outside the target ------------------------------


def _tar_member(name: str, kind=tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


UNSAFE_TAR = {
    "absolute path": _tar_member("/tmp/ssast-teach-evil.txt"),
    "dot-dot": _tar_member("top/../../evil.txt"),
    "symlink out": _tar_member("top/link", tarfile.SYMTYPE, "../../outside"),
    "hardlink": _tar_member("top/hard", tarfile.LNKTYPE, "/etc/passwd"),
    "device": _tar_member("top/dev", tarfile.CHRTYPE),
}


@pytest.mark.parametrize("with_python_filter", [True, False], ids=["filter", "no-filter"])
@pytest.mark.parametrize("case", list(UNSAFE_TAR))
def test_unsafe_tar_members_are_refused(case, with_python_filter, tmp_path, monkeypatch):
    if not with_python_filter:  # as on a Python without tarfile's data filter
        monkeypatch.setattr(datasets, "_TAR_FILTER", {})
    archive = tmp_path / "a" / "evil.tar"
    archive.parent.mkdir()
    bad = UNSAFE_TAR[case]
    with tarfile.open(archive, "w") as t:
        ok = tarfile.TarInfo("top/ok.txt")
        ok.size = 2
        t.addfile(ok, io.BytesIO(b"ok"))
        t.addfile(bad, io.BytesIO(b"") if bad.isreg() else None)
    into = tmp_path / "a" / "into"
    with pytest.raises(UnsafeArchiveError) as info:
        datasets._extract(archive, into)
    assert str(archive) in str(info.value) and repr(bad.name) in str(info.value)
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/ssast-teach-evil.txt").exists()


def _zip_symlink(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.external_attr = (0o120777) << 16  # S_IFLNK: what `zip --symlinks` writes
    return info, target.encode()


UNSAFE_ZIP = {
    "absolute path": (zipfile.ZipInfo("/tmp/ssast-teach-evil.txt"), b"x"),
    "dot-dot": (zipfile.ZipInfo("top/../../evil.txt"), b"x"),
    "backslash dot-dot": (zipfile.ZipInfo("top\\..\\..\\evil.txt"), b"x"),
    "symlink out": _zip_symlink("top/link", "../../outside"),
}


@pytest.mark.parametrize("case", list(UNSAFE_ZIP))
def test_unsafe_zip_members_are_refused(case, tmp_path):
    archive = tmp_path / "a" / "evil.zip"
    archive.parent.mkdir()
    info, data = UNSAFE_ZIP[case]
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("top/ok.txt", b"ok")
        z.writestr(info, data)
    into = tmp_path / "a" / "into"
    with pytest.raises(UnsafeArchiveError) as err:
        datasets._extract(archive, into)
    assert str(archive) in str(err.value) and repr(info.filename) in str(err.value)
    assert not into.exists() or not any(into.rglob("*"))  # checked before anything is written


def test_an_unsafe_download_is_refused_and_moved_aside(tmp_path, monkeypatch, caplog):
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w:gz") as t:
        t.addfile(_tar_member("yes/link", tarfile.SYMTYPE, "/etc/passwd"))
    archive = evil.getvalue()
    with FileServer({"/sc.tgz": archive}) as server:
        _pin_speech_commands(monkeypatch, archive, server.url("/sc.tgz"))
        (tmp_path / "speech_commands_v0.02.tar.gz").write_bytes(archive)
        with pytest.raises(UnsafeArchiveError, match="'yes/link' is a symlink") as info:
            prepare_speechcommands_v2(tmp_path)
    # The archive already there was refused (and kept), then the download (refused too).
    assert "'yes/link' is a symlink" in caplog.text
    assert len(_rejected(tmp_path, "speech_commands_v0.02.tar.gz")) == 2
    assert server.requests == ["/sc.tgz"]
    assert str(tmp_path / "speech_commands_v0.02.tar.gz") in str(info.value)
    assert not (tmp_path / "speech_commands_v0.02").exists()
    assert not list(tmp_path.glob(".*extracting"))
