"""Chapters 01 and 06: the course data, in the official datafile format.

The official code describes a dataset with two files:

* a datafile, JSON ``{"data": [{"wav": "/abs/path.wav", "labels": "mid1,mid2"}, ...]}``;
* a label CSV with the header ``index,mid,display_name``, one row per class.

A :class:`DataSplit` holds both in memory. The shipped course data (``data/``): ESC-10
(:func:`esc10`), the Free Spoken Digit Dataset (:func:`fsdd`) and a 300-clip Speech Commands
sample (:func:`speech_commands_mini`); :func:`pretraining_mix` mixes their audio and speech sides
as the paper mixes AudioSet and LibriSpeech. Datasets without mids get stable made-up ones,
``/{dataset}/{class}``, e.g. ``/esc10/dog_bark``. :class:`FbankDataset` turns a split into model
inputs with :class:`~ssast_teach.audio.FrontEnd`, optionally caching the raw fbanks.

Full datasets are downloaded and prepared by :func:`prepare_esc50`,
:func:`prepare_speechcommands_v2` and :func:`prepare_fsdd`; :func:`make_synthetic_dataset`
writes a seeded toy dataset in seconds without the network.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import re
import shutil
import tarfile
import uuid
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ssast_teach.audio import FrontEnd, FrontEndConfig
from ssast_teach.download import DownloadError, download_file

__all__ = [
    "DataSplit",
    "FbankDataset",
    "PRETRAIN_MID",
    "SYNTHETIC_KINDS",
    "data_dir",
    "default_cache_dir",
    "esc10",
    "fsdd",
    "load_datafile",
    "make_synthetic_dataset",
    "prepare_esc50",
    "prepare_fsdd",
    "prepare_speechcommands_v2",
    "pretraining_mix",
    "speech_commands_mini",
    "synthetic_clip",
    "synthetic_params",
]

DATA_ENV = "SSAST_TEACH_DATA"
LabelRow = tuple[int, str, str]  # (index, mid, display_name), one row of the label CSV


def data_dir() -> Path:
    """The course data folder: ``$SSAST_TEACH_DATA`` if set, else the repository's ``data/``."""
    env = os.environ.get(DATA_ENV)
    folder = Path(env).expanduser() if env else Path(__file__).resolve().parents[1] / "data"
    if not folder.is_dir():
        raise FileNotFoundError(
            f"course data folder not found: {folder}. It ships with the ssast-teach repository "
            f"(git clone it and `pip install -e .` from its root), or set {DATA_ENV} to a folder "
            "holding esc10/, fsdd/recordings/ and speech_commands_mini/."
        )
    return folder


def default_cache_dir() -> Path:
    """Where :class:`FbankDataset` keeps fbanks on disk by default: ``data/cache/fbank``."""
    return data_dir() / "cache" / "fbank"


def _write_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    """``write`` a temp file next to ``path`` and rename it over ``path``: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append .npy to a path
        np.save(f, array)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


# ---------------------------------------------------------------------------------------------
# The official datafile format


@dataclass
class DataSplit:
    """One list of clips with the label table it refers to."""

    name: str
    items: list[dict[str, str]]  # [{"wav": path, "labels": "mid1,mid2"}]
    labels: list[LabelRow] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def label_index(self) -> dict[str, int]:
        """``{mid: index}``."""
        return {mid: index for index, mid, _ in self.labels}

    def to_datafile(self, path: str | Path) -> Path:
        """Write the official datafile JSON (atomically)."""

        def write(tmp: Path) -> None:
            tmp.write_text(json.dumps({"data": self.items}, indent=1), encoding="utf-8")

        return _write_atomic(path, write)

    def write_label_csv(self, path: str | Path) -> Path:
        """Write the official ``index,mid,display_name`` CSV (atomically), names quoted as there."""

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                f.write("index,mid,display_name\n")
                for index, mid, name in self.labels:
                    quoted = name.replace('"', '""')
                    f.write(f'{index},{mid},"{quoted}"\n')

        return _write_atomic(path, write)


def read_label_csv(path: str | Path) -> list[LabelRow]:
    """Rows ``(index, mid, display_name)`` of an official label CSV."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"index", "mid", "display_name"} <= set(
            reader.fieldnames
        ):
            raise ValueError(f"{path}: expected a CSV with header index,mid,display_name")
        return [(int(row["index"]), row["mid"], row["display_name"]) for row in reader]


def load_datafile(json_path: str | Path, label_csv: str | Path) -> DataSplit:
    """Read an official datafile and its label CSV. Relative ``wav`` paths are taken relative to
    the datafile's folder; every label must be a mid of the CSV."""
    json_path = Path(json_path)
    try:
        items = json.loads(json_path.read_text(encoding="utf-8"))["data"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(
            f"{json_path}: not an official datafile {{'data': [...]}} ({err})"
        ) from None
    labels = read_label_csv(label_csv)
    known = {mid for _, mid, _ in labels}
    for item in items:
        if "wav" not in item or "labels" not in item:
            raise ValueError(f"{json_path}: every entry needs 'wav' and 'labels', got {item}")
        unknown = set(item["labels"].split(",")) - known
        if unknown:
            raise ValueError(
                f"{json_path}: {item['wav']} has labels {sorted(unknown)} not in {label_csv}"
            )
        wav = Path(item["wav"])
        if not wav.is_absolute():
            item["wav"] = str(json_path.parent / wav)
    return DataSplit(json_path.stem, items, labels)


# ---------------------------------------------------------------------------------------------
# Course data shipped in data/

ESC10_FOLDS = (1, 2, 3, 4, 5)
FSDD_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
FSDD_TEST_TAKES = range(0, 5)  # the dataset's own split: takes 0-4 test, 5-49 train
_FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")


def esc10(folds: Iterable[int] | None = None, *, root: str | Path | None = None) -> DataSplit:
    """ESC-10 clips of the given folds (all five by default). The fold is the file name's
    prefix, ``{fold}-{freesound_id}-{take}.ogg``; labels are ``/esc10/dog_bark`` etc."""
    root = Path(root) if root is not None else data_dir() / "esc10"
    folds = set(ESC10_FOLDS if folds is None else folds)
    if not folds <= set(ESC10_FOLDS):
        raise ValueError(f"ESC-10 folds are {ESC10_FOLDS}, got {sorted(folds)}")
    class_dirs = sorted(d for d in root.glob("[0-9][0-9][0-9] - *") if d.is_dir())
    if not class_dirs:
        raise FileNotFoundError(f"no ESC-10 class folders ('001 - Dog bark', ...) in {root}")
    labels, items = [], []
    for index, folder in enumerate(class_dirs):
        display = folder.name.split(" - ", 1)[1]
        mid = f"/esc10/{_slug(display)}"
        labels.append((index, mid, display))
        for clip in sorted(folder.glob("*.ogg")):
            if int(clip.name.split("-", 1)[0]) in folds:
                items.append({"wav": str(clip.resolve()), "labels": mid})
    return DataSplit(f"esc10_folds{''.join(map(str, sorted(folds)))}", items, labels)


def _fsdd_split(recordings: Path, split: str, name: str) -> DataSplit:
    if split not in ("train", "test", "all"):
        raise ValueError(f"FSDD split must be 'train', 'test' or 'all', got {split!r}")
    if not recordings.is_dir():
        raise FileNotFoundError(f"FSDD recordings folder not found: {recordings}")
    labels = [(d, f"/fsdd/{word}", word) for d, word in enumerate(FSDD_DIGITS)]
    items = []
    for wav in sorted(recordings.iterdir()):
        match = _FSDD_NAME.match(wav.name)
        if match is None:
            continue
        digit, take = int(match.group(1)), int(match.group(3))
        in_test = take in FSDD_TEST_TAKES
        if split == "all" or in_test == (split == "test"):
            items.append({"wav": str(wav.resolve()), "labels": labels[digit][1]})
    return DataSplit(f"{name}_{split}", items, labels)


def fsdd(split: str = "train", *, root: str | Path | None = None) -> DataSplit:
    """Free Spoken Digit Dataset recordings ``{digit}_{speaker}_{take}.wav``: ``test`` is takes
    0-4, ``train`` takes 5-49, ``all`` both. Labels are ``/fsdd/zero`` ... ``/fsdd/nine``."""
    recordings = Path(root) if root is not None else data_dir() / "fsdd" / "recordings"
    return _fsdd_split(recordings, split, "fsdd")


_SC_SPLITS = {"train": None, "validation": "validation_list.txt", "test": "testing_list.txt"}


def _speech_commands_split(root: Path, split: str, name: str) -> DataSplit:
    """Speech Commands by its own lists; train is every clip in neither list (as the official
    ``prep_sc.py``). Words are the sub-folders except ``_background_noise_``, sorted."""
    if split not in (*_SC_SPLITS, "all"):
        raise ValueError(
            f"Speech Commands split must be one of {[*_SC_SPLITS, 'all']}, got {split!r}"
        )
    words = sorted(
        d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(("_", "."))
    )
    if not words:
        raise FileNotFoundError(f"no Speech Commands word folders in {root}")
    held_out: dict[str, set[str]] = {}
    for key in ("validation", "test"):
        listing = root / _SC_SPLITS[key]
        if not listing.is_file():
            raise FileNotFoundError(f"Speech Commands list not found: {listing}")
        held_out[key] = set(listing.read_text().split())
    labels = [(i, f"/speechcommands/{_slug(w)}", w) for i, w in enumerate(words)]
    items = []
    for _, mid, word in labels:
        for wav in sorted((root / word).glob("*.wav")):
            rel = f"{word}/{wav.name}"
            where = next((k for k, names in held_out.items() if rel in names), "train")
            if split in ("all", where):
                items.append({"wav": str(wav.resolve()), "labels": mid})
    return DataSplit(f"{name}_{split}", items, labels)


def speech_commands_mini(split: str = "train", *, root: str | Path | None = None) -> DataSplit:
    """The 300-clip Speech Commands v0.01 sample (30 words) split by the dataset's
    ``validation_list.txt`` / ``testing_list.txt``: 205 train, 44 validation, 51 test."""
    root = Path(root) if root is not None else data_dir() / "speech_commands_mini"
    return _speech_commands_split(root, split, "speech_commands_mini")


# The official mix gives every clip AudioSet's "Speech" mid as a dummy label; pretraining never
# reads it, but the datafile format needs one.
PRETRAIN_MID = "/m/09x0r"
PRETRAIN_SOURCES = ("audio", "speech", "audio+speech")


def pretraining_mix(
    sources: str = "audio+speech",
    *,
    esc10_folds: Iterable[int] | None = None,
    fsdd_split: str = "train",
    speech_commands_split: str = "train",
    seed: int | None = 0,
    data: str | Path | None = None,
) -> DataSplit:
    """One unlabeled pretraining list, the course-size AudioSet + LibriSpeech.

    ``sources`` picks ``audio`` (ESC-10, folds ``esc10_folds``, all by default), ``speech``
    (FSDD ``fsdd_split`` + Speech Commands ``speech_commands_split``, train by default) or
    ``audio+speech``. As in the official ``mix_pretraining_data.py`` each source list is shuffled
    (with ``seed``; ``None`` keeps file order), then the lists are concatenated, audio first.
    Hold out evaluation clips with the split/fold arguments.
    """
    if sources not in PRETRAIN_SOURCES:
        raise ValueError(f"sources must be one of {PRETRAIN_SOURCES}, got {sources!r}")
    data = Path(data) if data is not None else data_dir()
    lists: list[list[dict[str, str]]] = []
    if sources in ("audio", "audio+speech"):
        lists.append(esc10(esc10_folds, root=data / "esc10").items)
    if sources in ("speech", "audio+speech"):
        lists.append(fsdd(fsdd_split, root=data / "fsdd" / "recordings").items)
        sc = speech_commands_mini(speech_commands_split, root=data / "speech_commands_mini")
        lists.append(sc.items)
    rng = random.Random(seed)
    items = []
    for source in lists:
        source = [{"wav": item["wav"], "labels": PRETRAIN_MID} for item in source]
        if seed is not None:
            rng.shuffle(source)
        items += source
    return DataSplit(f"pretrain_{sources.replace('+', '_')}", items, [(0, PRETRAIN_MID, "Speech")])


# ---------------------------------------------------------------------------------------------
# Model inputs


class FbankDataset(torch.utils.data.Dataset):
    """``(fbank (target_length, F), label (n_classes,))`` per clip, as the official dataloader
    returns: a multi-hot label, mixed with the same lambda when mixup is drawn.

    ``training`` turns on the config's SpecAugment, noise and mixup (the partner clip drawn
    uniformly from the split). ``cache=True`` keeps each clip's raw fbank (before pad/cut,
    augmentation and normalisation) in memory; ``cache_dir`` also stores it there as ``.npy``,
    keyed by path, mtime, size and front-end settings, so later epochs and runs skip decoding.
    Augmentation is still drawn afresh each time. Mixed clips are computed from the waveforms.
    With DataLoader workers each worker has its own memory cache; the disk cache is shared.
    """

    def __init__(
        self,
        split: DataSplit,
        config: FrontEndConfig | None = None,
        *,
        training: bool = False,
        cache: bool = False,
        cache_dir: str | Path | None = None,
    ):
        self.split = split
        self.frontend = FrontEnd(config)
        self.training = training
        self.index = split.label_index()
        self.n_classes = len(split.labels)
        for item in split.items:
            unknown = set(item["labels"].split(",")) - set(self.index)
            if unknown:
                raise ValueError(
                    f"{item['wav']}: labels {sorted(unknown)} not in split {split.name!r}"
                )
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._memory: dict[str, torch.Tensor] | None = (
            {} if cache or self.cache_dir is not None else None
        )

    def __len__(self) -> int:
        return len(self.split)

    def label_vector(self, i: int) -> torch.Tensor:
        """Multi-hot ``(n_classes,)`` float label of clip ``i``."""
        vec = torch.zeros(self.n_classes)
        for mid in self.split.items[i]["labels"].split(","):
            vec[self.index[mid]] = 1.0
        return vec

    def _cache_key(self, path: Path) -> str:
        stat = path.stat()
        c = self.frontend.config
        key = f"{path.resolve()}|{stat.st_mtime_ns}|{stat.st_size}|{c.sample_rate}|{c.num_mel_bins}"
        return hashlib.sha1(key.encode()).hexdigest()

    def raw_fbank(self, i: int) -> torch.Tensor:
        """Clip ``i``'s fbank before pad/cut, augmentation and normalisation, ``(T, F)``."""
        path = Path(self.split.items[i]["wav"])
        if self._memory is None:
            return self.frontend.raw_fbank(path)
        key = self._cache_key(path)
        if key in self._memory:
            return self._memory[key]
        stored = self.cache_dir / f"{key}.npy" if self.cache_dir is not None else None
        if stored is not None and stored.is_file():
            raw = torch.from_numpy(np.load(stored))
        else:
            raw = self.frontend.raw_fbank(path)  # (T, F)
            if stored is not None:
                _write_atomic(stored, lambda tmp: _save_npy(tmp, raw.numpy()))
        self._memory[key] = raw
        return raw

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.frontend.config
        if self.training and cfg.mixup > 0 and float(torch.rand(())) < cfg.mixup:
            j = int(torch.randint(len(self), ()))
            x, lam = self.frontend.mixup(self.split.items[i]["wav"], self.split.items[j]["wav"])
            return x, lam * self.label_vector(i) + (1 - lam) * self.label_vector(j)
        x = self.frontend.finish(self.raw_fbank(i), training=self.training)  # (target_length, F)
        return x, self.label_vector(i)


# ---------------------------------------------------------------------------------------------
# Synthetic data: seeded, offline, seconds

SYNTHETIC_KINDS = ("chirp", "harmonic", "clicks", "noise")
CHIRP_START_HZ, CHIRP_END_HZ = 500.0, 4000.0  # each jittered by up to +-10% per clip
HARMONIC_F0_HZ = (150.0, 300.0)  # fundamental range; harmonics 1-5 with amplitude 1/k
CLICK_RATE_HZ = (4.0, 8.0)  # clicks per second; each click a 5 ms decaying noise burst
CLICK_MS = 5.0
SYNTHETIC_PEAK = 0.5  # every clip is scaled to this peak amplitude


def _synthetic_rng(kind: str, seed: int | Sequence[int]) -> np.random.Generator:
    if kind not in SYNTHETIC_KINDS:
        raise ValueError(f"synthetic kind must be one of {SYNTHETIC_KINDS}, got {kind!r}")
    seeds = [seed] if isinstance(seed, int) else list(seed)
    return np.random.default_rng([*seeds, SYNTHETIC_KINDS.index(kind)])


def _draw_params(kind: str, rng: np.random.Generator, seconds: float) -> dict[str, float | list]:
    if kind == "chirp":
        return {
            "start_hz": CHIRP_START_HZ * rng.uniform(0.9, 1.1),
            "end_hz": CHIRP_END_HZ * rng.uniform(0.9, 1.1),
        }
    if kind == "harmonic":
        return {"f0_hz": rng.uniform(*HARMONIC_F0_HZ)}
    if kind == "clicks":
        rate = rng.uniform(*CLICK_RATE_HZ)
        first = rng.uniform(0, 1 / rate)
        return {
            "rate_hz": rate,
            "click_s": np.arange(first, seconds - CLICK_MS / 1000, 1 / rate).tolist(),
        }
    return {}


def synthetic_params(kind: str, seconds: float = 1.0, seed: int | Sequence[int] = 0) -> dict:
    """The known answers behind :func:`synthetic_clip` with the same arguments: ``start_hz`` /
    ``end_hz`` (chirp), ``f0_hz`` (harmonic), ``rate_hz`` and ``click_s`` onsets (clicks)."""
    return _draw_params(kind, _synthetic_rng(kind, seed), seconds)


def synthetic_clip(
    kind: str, seconds: float = 1.0, sample_rate: int = 16000, seed: int | Sequence[int] = 0
) -> torch.Tensor:
    """A seeded toy clip ``(1, S)`` with peak 0.5: a linear ``chirp`` (~500 -> ~4000 Hz), a
    ``harmonic`` tone (f0 150-300 Hz, 5 harmonics), ``clicks`` (4-8 per second) or white
    ``noise``. :func:`synthetic_params` gives the exact frequencies and click times."""
    if sample_rate < 10000:
        raise ValueError(
            f"synthetic clips need sample_rate >= 10000 (chirp up to 4.4 kHz), got {sample_rate}"
        )
    rng = _synthetic_rng(kind, seed)
    p = _draw_params(kind, rng, seconds)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    if kind == "chirp":
        sweep = (p["end_hz"] - p["start_hz"]) / seconds
        x = np.sin(2 * np.pi * (p["start_hz"] * t + sweep * t**2 / 2) + rng.uniform(0, 2 * np.pi))
    elif kind == "harmonic":
        phases = rng.uniform(0, 2 * np.pi, 5)
        x = sum(np.sin(2 * np.pi * k * p["f0_hz"] * t + phases[k - 1]) / k for k in range(1, 6))
    elif kind == "clicks":
        x = np.zeros(n)
        width = int(CLICK_MS / 1000 * sample_rate)
        burst = rng.standard_normal(width) * np.exp(-np.arange(width) / (width / 5))
        for onset in p["click_s"]:
            start = int(onset * sample_rate)
            x[start : start + width] = burst[: n - start]
    else:
        x = rng.standard_normal(n)
    x = SYNTHETIC_PEAK * x / max(np.abs(x).max(), 1e-12)
    return torch.from_numpy(x.astype(np.float32)).unsqueeze(0)  # (1, S)


def _write_wav(path: Path, waveform: np.ndarray, sample_rate: int) -> Path:
    return _write_atomic(
        path, lambda tmp: sf.write(tmp, waveform, sample_rate, format="WAV", subtype="PCM_16")
    )


def make_synthetic_dataset(
    out_dir: str | Path,
    n_per_class: int = 8,
    seconds: float = 1.0,
    seed: int = 0,
    sample_rate: int = 16000,
) -> DataSplit:
    """Write ``n_per_class`` clips of every synthetic kind as 16-bit WAV under ``out_dir/{kind}/``
    plus ``synthetic_data.json`` and ``synthetic_class_labels_indices.csv``; return the split."""
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be at least 1, got {n_per_class}")
    out_dir = Path(out_dir).resolve()
    labels = [(i, f"/synthetic/{kind}", kind) for i, kind in enumerate(SYNTHETIC_KINDS)]
    items = []
    for _, mid, kind in labels:
        for i in range(n_per_class):
            clip = synthetic_clip(kind, seconds, sample_rate, seed=(seed, i))
            wav = _write_wav(out_dir / kind / f"{kind}_{i:03d}.wav", clip[0].numpy(), sample_rate)
            items.append({"wav": str(wav), "labels": mid})
    split = DataSplit("synthetic", items, labels)
    split.to_datafile(out_dir / "synthetic_data.json")
    split.write_label_csv(out_dir / "synthetic_class_labels_indices.csv")
    return split


# ---------------------------------------------------------------------------------------------
# Full datasets: download and prepare

ESC50_URL = "https://github.com/karolpiczak/ESC-50/archive/master.zip"
SPEECHCOMMANDS_V2_URL = "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz"
FSDD_URL = "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/heads/master.zip"


def _extract(archive: Path, dest: Path, top: str | None) -> None:
    """Unpack ``archive`` so that ``dest`` appears complete or not at all. ``top`` is the
    archive's own top folder (``None`` when its files sit at the top level)."""
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.extracting")
    try:
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as z:
                z.extractall(tmp)
        else:
            with tarfile.open(archive) as t:
                if hasattr(tarfile, "data_filter"):
                    t.extractall(tmp, filter="data")
                else:
                    t.extractall(tmp)
        source = tmp / top if top else tmp
        if not source.is_dir():
            raise ValueError(f"{archive}: expected a top folder {top!r} inside the archive")
        os.replace(source, dest)
    except (zipfile.BadZipFile, tarfile.TarError) as err:
        raise ValueError(
            f"{archive}: not a valid archive ({err}); delete it and run again"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _ensure_dataset(
    root: Path, folder: str, archive: str, url: str, top: str | None, marker: str
) -> Path:
    """``root/folder`` holding ``marker``: used if present, else unpacked from ``root/archive``,
    else downloaded from ``url`` first."""
    dest = root / folder
    if (dest / marker).exists():
        return dest
    if dest.exists():
        raise FileNotFoundError(f"{dest} exists but has no {marker}; remove it and run again")
    archive_path = root / archive
    if not archive_path.is_file():
        try:
            download_file(url, archive_path)
        except DownloadError as err:
            raise DownloadError(
                f"{err}\nOr unpack the archive yourself so that {dest / marker} exists."
            ) from None
    _extract(archive_path, dest, top)
    if not (dest / marker).exists():
        raise FileNotFoundError(f"{archive_path} unpacked to {dest} but {marker} is missing")
    return dest


def _write_splits(root: Path, splits: list[DataSplit], label_csv: str) -> dict[str, DataSplit]:
    for split in splits:
        split.to_datafile(root / "datafiles" / f"{split.name}.json")
    splits[0].write_label_csv(root / label_csv)
    return {split.name: split for split in splits}


def prepare_esc50(root: str | Path) -> dict[str, DataSplit]:
    """Download ESC-50 into ``root`` (unless already there) and write, as the official
    ``prep_esc50.py``, ``datafiles/esc_{train,eval}_data_{fold}.json`` for the 5 folds and
    ``esc_class_labels_indices.csv`` (index = ESC-50 target, official mids ``/m/07rwjNN``).

    The clips stay at 44.1 kHz; the front end resamples them to 16 kHz when loading (the
    official recipe converts them with sox beforehand)."""
    root = Path(root).resolve()
    base = _ensure_dataset(
        root, "ESC-50-master", "ESC-50-master.zip", ESC50_URL, "ESC-50-master", "meta/esc50.csv"
    )
    with open(base / "meta" / "esc50.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    names = {int(r["target"]): r["category"] for r in rows}
    labels = [(t, f"/m/07rwj{t:02d}", names[t]) for t in sorted(names)]
    splits = []
    for fold in ESC10_FOLDS:
        train, evaluation = [], []
        for r in rows:
            item = {
                "wav": str(base / "audio" / r["filename"]),
                "labels": f"/m/07rwj{int(r['target']):02d}",
            }
            (evaluation if int(r["fold"]) == fold else train).append(item)
        splits += [
            DataSplit(f"esc_train_data_{fold}", train, labels),
            DataSplit(f"esc_eval_data_{fold}", evaluation, labels),
        ]
    return _write_splits(root, splits, "esc_class_labels_indices.csv")


def prepare_speechcommands_v2(root: str | Path) -> dict[str, DataSplit]:
    """Download Speech Commands V2 into ``root/speech_commands_v0.02`` (unless already there)
    and write ``datafiles/speechcommand_{train,valid,eval}_data.json`` from the official
    validation/testing lists (train = the rest) and ``speechcommands_class_labels_indices.csv``
    (the 35 words, sorted, mids ``/speechcommands/{word}``)."""
    root = Path(root).resolve()
    base = _ensure_dataset(
        root,
        "speech_commands_v0.02",
        "speech_commands_v0.02.tar.gz",
        SPEECHCOMMANDS_V2_URL,
        None,
        "testing_list.txt",
    )
    names = {
        "train": "speechcommand_train_data",
        "validation": "speechcommand_valid_data",
        "test": "speechcommand_eval_data",
    }
    splits = []
    for split, name in names.items():
        s = _speech_commands_split(base, split, "speechcommands")
        splits.append(DataSplit(name, s.items, s.labels))
    return _write_splits(root, splits, "speechcommands_class_labels_indices.csv")


def prepare_fsdd(root: str | Path) -> dict[str, DataSplit]:
    """Download the full Free Spoken Digit Dataset (6 speakers, 3000 recordings) into ``root``
    (unless already there) and write ``datafiles/fsdd_{train,test}_data.json`` (takes 0-4 test)
    and ``fsdd_class_labels_indices.csv``."""
    root = Path(root).resolve()
    base = _ensure_dataset(
        root,
        "free-spoken-digit-dataset-master",
        "free-spoken-digit-dataset-master.zip",
        FSDD_URL,
        "free-spoken-digit-dataset-master",
        "recordings",
    )
    splits = []
    for split in ("train", "test"):
        s = _fsdd_split(base / "recordings", split, "fsdd")
        splits.append(DataSplit(f"fsdd_{split}_data", s.items, s.labels))
    return _write_splits(root, splits, "fsdd_class_labels_indices.csv")
