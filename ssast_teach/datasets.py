"""Chapters 01 and 06: the course data, in the official datafile format.

The official code describes a dataset with two files:

* a datafile, JSON ``{"data": [{"wav": "/abs/path.wav", "labels": "mid1,mid2"}, ...]}``;
* a label CSV with the header ``index,mid,display_name``, one row per class.

A :class:`DataSplit` holds both in memory. The shipped course data (``data/``): ESC-10
(:func:`esc10`), the Free Spoken Digit Dataset (:func:`fsdd`) and a 300-clip Speech Commands
sample (:func:`speech_commands_mini`); :func:`pretraining_mix` mixes their audio and speech sides
as the paper mixes AudioSet and LibriSpeech; :func:`evaluation_splits` names the folds every
model and its baseline are scored on. Datasets without mids get stable made-up ones,
``/{dataset}/{class}``, e.g. ``/esc10/dog_bark``. :class:`FbankDataset` turns a split into model
inputs with :class:`~ssast_teach.audio.FrontEnd`, optionally caching the raw fbanks.

Full datasets are downloaded, verified file by file and prepared by :func:`prepare_esc50`,
:func:`prepare_speechcommands_v2` and :func:`prepare_fsdd`; :func:`make_synthetic_dataset`
writes a seeded toy dataset in seconds without the network.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import logging
import os
import random
import re
import shutil
import stat
import tarfile
import uuid
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ssast_teach.audio import FrontEnd, FrontEndConfig
from ssast_teach.download import (
    IntegrityError,
    atomic_write,
    download_file,
    git_blob_sha1,
    mismatch,
    move_aside,
    rank_zero_first,
)

__all__ = [
    "EVALUATION_SPLITS",
    "DataSplit",
    "FbankDataset",
    "PackedFbankDataset",
    "PRETRAIN_MID",
    "SYNTHETIC_KINDS",
    "UnsafeArchiveError",
    "clip_frames",
    "data_dir",
    "default_cache_dir",
    "esc10",
    "evaluation_splits",
    "fsdd",
    "fsdd_speaker",
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

log = logging.getLogger(__name__)

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

        return atomic_write(path, write)

    def write_label_csv(self, path: str | Path) -> Path:
        """Write the official ``index,mid,display_name`` CSV (atomically), names quoted as there."""

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                f.write("index,mid,display_name\n")
                for index, mid, name in self.labels:
                    quoted = name.replace('"', '""')
                    f.write(f'{index},{mid},"{quoted}"\n')

        return atomic_write(path, write)


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
# Named evaluation splits: every model and its baseline are scored on the same folds

EVALUATION_SPLITS = ("esc10_cv", "fsdd_standard", "fsdd_speakers", "speech_commands_mini")
EvaluationFold = tuple[str, DataSplit, DataSplit]  # (fold_name, train, test)


def fsdd_speaker(path: str | Path) -> str:
    """The speaker of an FSDD recording ``{digit}_{speaker}_{take}.wav``."""
    match = _FSDD_NAME.match(Path(path).name)
    if match is None:
        raise ValueError(f"{path}: not an FSDD recording name {{digit}}_{{speaker}}_{{take}}.wav")
    return match.group(2)


def _fsdd_by_speaker(recordings: Path) -> list[EvaluationFold]:
    """Leave one speaker out, for each speaker found in ``recordings`` (sorted)."""
    every = _fsdd_split(recordings, "all", "fsdd")
    speakers = sorted({fsdd_speaker(item["wav"]) for item in every.items})
    folds = []
    for speaker in speakers:
        test = [item for item in every.items if fsdd_speaker(item["wav"]) == speaker]
        train = [item for item in every.items if fsdd_speaker(item["wav"]) != speaker]
        folds.append((
            f"speaker_{speaker}",
            DataSplit(f"fsdd_without_{speaker}", train, every.labels),
            DataSplit(f"fsdd_speaker_{speaker}", test, every.labels),
        ))
    return folds


def evaluation_splits(name: str, *, data: str | Path | None = None) -> list[EvaluationFold]:
    """The folds ``[(fold_name, train, test), ...]`` of a named evaluation on the course data
    (``data``, default :func:`data_dir`). Score a model and its baseline on the same folds and
    the test clips pair up one to one (:mod:`ssast_teach.stats`).

    * ``esc10_cv``: 5-fold cross-validation over ESC-10's official folds, each held out once
      (``fold1`` ... ``fold5``): all 400 clips are tested exactly once. Clips cut from one
      recording share a fold, so the folds never split a recording.
    * ``fsdd_standard``: FSDD's own split, takes 0-4 test (one fold, ``standard``). Every
      speaker is in both sides: it measures new takes of known voices.
    * ``fsdd_speakers``: leave one speaker out (``speaker_jackson``, ...), over the speakers
      whose recordings are in ``fsdd/recordings``: a voice never heard in training.
    * ``speech_commands_mini``: the train clips vs the official test list (one fold,
      ``test``). The validation list stays out of both sides: the fine-tuning trainer spends it
      on choosing the epoch, so a baseline trained on it would see 44 clips more than the model
      it is read against.
    """
    root = Path(data) if data is not None else data_dir()
    if name == "esc10_cv":
        return [
            (f"fold{k}", esc10([f for f in ESC10_FOLDS if f != k], root=root / "esc10"),
             esc10([k], root=root / "esc10"))
            for k in ESC10_FOLDS
        ]
    if name == "fsdd_standard":
        recordings = root / "fsdd" / "recordings"
        return [("standard", fsdd("train", root=recordings), fsdd("test", root=recordings))]
    if name == "fsdd_speakers":
        return _fsdd_by_speaker(root / "fsdd" / "recordings")
    if name == "speech_commands_mini":
        sc = root / "speech_commands_mini"
        return [("test", speech_commands_mini("train", root=sc),
                 speech_commands_mini("test", root=sc))]
    raise ValueError(f"evaluation split name must be one of {EVALUATION_SPLITS}, got {name!r}")


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
                atomic_write(stored, lambda tmp: _save_npy(tmp, raw.numpy()))
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


def clip_frames(path: str | Path, sample_rate: int = 16000) -> int:
    """How many 10 ms fbank frames the front end makes of the clip at ``path``, from its header
    alone (nothing decoded): the Kaldi count ``1 + (samples - 400) // 160`` at 16 kHz."""
    info = sf.info(str(path))
    samples = round(info.frames * sample_rate / info.samplerate)
    return max(0, 1 + (samples - sample_rate // 40) // (sample_rate // 100))


class PackedFbankDataset(FbankDataset):
    """Pretraining inputs with no padding to speak of: clips shorter than the input are packed
    end to end, in split order, until ``target_length`` frames are filled (course deviation).

    Not official: the official speech side, LibriSpeech, has utterances longer than the 10 s
    input, so its inputs are all speech. The course's spoken digits last about 0.4 s (median;
    90% under 0.6 s): padded to 1.28 s, most masked targets of a speech input would be padding
    and the model would learn to predict silence. Packing three or four digits into one input
    gives the objectives speech to work on, as language-model pretraining packs documents.
    A clip at least ``target_length`` long stands alone (cut as usual); a pack's last clip may
    be cut. ``groups[k]`` lists the clips of input ``k``; its label is its first clip's.
    """

    def __init__(self, split: DataSplit, config: FrontEndConfig | None = None, **kwargs):
        super().__init__(split, config, **kwargs)
        if self.training and self.frontend.config.mixup > 0:
            raise ValueError("PackedFbankDataset packs pretraining inputs: mixup is not supported")
        target = self.frontend.config.target_length
        self.groups: list[list[int]] = []
        pack: list[int] = []
        filled = 0
        for i, item in enumerate(split.items):
            frames = clip_frames(item["wav"], self.frontend.config.sample_rate)
            if frames >= target:
                self.groups.append([i])
                continue
            pack.append(i)
            filled += frames
            if filled >= target:
                self.groups.append(pack)
                pack, filled = [], 0
        if pack:
            self.groups.append(pack)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        raw = torch.cat([self.raw_fbank(i) for i in self.groups[k]])  # (sum of T, F)
        x = self.frontend.finish(raw, training=self.training)  # (target_length, F)
        return x, self.label_vector(self.groups[k][0])


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
    return atomic_write(
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
# Full datasets: download, verify and prepare
#
# A recipe uses fixed content and checks it before every use. ESC-50 and FSDD: the archive of one
# commit of their GitHub repositories, each file the recipe reads checked against its git blob id
# at that commit (resources/{esc50,fsdd}_manifest.json). Speech Commands: the archive's published
# size and sha256, then, after unpacking, each file against the blob ids taken from that verified
# archive (kept in the folder as _FILES_RECORD). A file that fails is moved aside, never used.

# Size and sha256 as tensorflow/datasets pins them for the same file over http
# (tensorflow_datasets/url_checksums/speech_commands.txt); this is the same bucket over https.
SPEECHCOMMANDS_V2_URL = (
    "https://storage.googleapis.com/download.tensorflow.org/data/speech_commands_v0.02.tar.gz"
)
SPEECHCOMMANDS_V2_SIZE = 2_428_923_189
SPEECHCOMMANDS_V2_SHA256 = "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58"
_FILES_RECORD = ".ssast-teach-files.json"


class UnsafeArchiveError(IntegrityError):
    """An archive member would land outside the folder it is unpacked into (an absolute path, a
    ``..`` component) or is a link or a device: the archive is refused, nothing is unpacked."""


@dataclass(frozen=True)
class _Source:
    """Where a recipe's files come from and how they are checked."""

    name: str  # for messages
    url: str
    archive: str  # the archive's file name in the recipe's root
    folder: str  # the folder it is unpacked to in the root
    top: str | None  # the archive's own top folder (None: its files sit at the top level)
    files: dict[str, str] | None  # path -> git blob id; None: taken from the verified archive
    sha256: str | None = None
    size: int | None = None


def _pinned(manifest: str) -> dict:
    """``resources/<manifest>``: ``{"repository", "commit", "files": {path: git blob id}}``."""
    resource = resources.files("ssast_teach").joinpath(f"resources/{manifest}")
    if not resource.is_file():
        raise FileNotFoundError(
            f"ssast_teach/resources/{manifest} is missing: this dataset has no pinned commit and "
            "file hashes yet, and the recipe uses no file it cannot verify. data/SOURCES.md says "
            "how to write the manifest."
        )
    return json.loads(resource.read_text(encoding="utf-8"))


def _github_source(name: str, manifest: str) -> _Source:
    """The archive GitHub makes of the pinned commit; it unpacks to ``<repo>-<commit>/``."""
    pinned = _pinned(manifest)
    repository, commit = pinned["repository"].rstrip("/"), pinned["commit"]
    top = f"{repository.rsplit('/', 1)[1]}-{commit}"
    return _Source(
        name=name,
        url=f"{repository}/archive/{commit}.zip",
        archive=f"{top}.zip",
        folder=top,
        top=top,
        files=pinned["files"],
    )


def _unsafe(name: str) -> str | None:
    """Why archive member ``name`` would not land inside the target folder, or None."""
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        return "has an absolute path"
    if ".." in re.split(r"[/\\]", name):
        return "has a '..' component"
    return None


def _tar_kind(member: tarfile.TarInfo) -> str | None:
    """Why a tar member is not a plain file or folder, or None."""
    if member.isreg() or member.isdir():
        return None
    if member.issym():
        return f"is a symlink to {member.linkname!r}"
    if member.islnk():
        return f"is a hard link to {member.linkname!r}"
    return "is a device, a fifo or another special file"


def _zip_kind(info: zipfile.ZipInfo) -> str | None:
    """Why a zip member is not a plain file or folder, or None. The file type sits in the Unix
    mode bits; archives made elsewhere leave them 0."""
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind in (0, stat.S_IFREG, stat.S_IFDIR):
        return None
    return "is a symlink" if kind == stat.S_IFLNK else "is a device, a fifo or a special file"


# Python's own tar filter where it exists (3.12, and the 3.10.12 / 3.11.4 updates): a second
# line of defence that also drops set-uid bits. _extract's own member check does not rely on it.
_TAR_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


def _extract(archive: Path, into: Path) -> None:
    """Unpack ``archive`` (zip, or tar of any compression) into the new folder ``into``.

    Every member is checked before it is written: a path that would land outside ``into``, a
    link or a device raises :class:`UnsafeArchiveError` naming the archive and the member. The
    caller unpacks into a temporary folder and removes it on error, so nothing partial stays.
    """
    into.mkdir(parents=True)
    try:
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as z:
                members = z.infolist()
                for info in members:
                    _refuse_if(archive, info.filename, _unsafe(info.filename) or _zip_kind(info))
                z.extractall(into, members)
        else:
            with tarfile.open(archive) as t:
                for member in t:  # one pass: a .tar.gz is decompressed once
                    _refuse_if(archive, member.name, _unsafe(member.name) or _tar_kind(member))
                    t.extract(member, into, **_TAR_FILTER)
    except (zipfile.BadZipFile, tarfile.TarError, gzip.BadGzipFile, zlib.error, EOFError) as err:
        raise IntegrityError(f"{archive}: not a valid archive ({err})") from None


def _refuse_if(archive: Path, member: str, reason: str | None) -> None:
    if reason is not None:
        raise UnsafeArchiveError(
            f"{archive}: member {member!r} {reason}, but every member must be a plain file or "
            "folder inside the folder it is unpacked into; refusing to unpack this archive"
        )


def _differences(base: Path, files: Mapping[str, str]) -> list[str]:
    """One line per pinned file that is missing under ``base`` or has another blob id."""
    found = []
    for path, blob in files.items():
        file = base / path
        if not file.is_file():
            found.append(f"{path}: expected blob {blob}, found no file")
        elif (got := git_blob_sha1(file)) != blob:
            found.append(f"{path}: expected blob {blob}, found {got}")
    return found


def _summary(differences: list[str], total: int) -> str:
    shown = "; ".join(differences[:3]) + ("; ..." if len(differences) > 3 else "")
    return f"{len(differences)} of {total} files differ ({shown})"


def _unpack(archive: Path, dest: Path, source: _Source) -> dict[str, str]:
    """Check ``archive``, unpack it, check its files, then move them to ``dest`` in one rename.
    Returns the verified files ``{path: blob id}``; raises :class:`IntegrityError` (archive left
    where it is) when the archive or what it holds is not the pinned content."""
    problem = mismatch(archive, size=source.size, sha256=source.sha256)
    if problem is not None:
        raise IntegrityError(f"{archive} is not the {source.name} archive ({problem})")
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.extracting")
    try:
        _extract(archive, tmp)
        base = tmp / source.top if source.top else tmp
        if not base.is_dir():
            raise IntegrityError(f"{archive}: expected a top folder {source.top!r} inside it")
        files = source.files
        if files is None:  # the archive was verified as a whole: record what it holds
            files = {
                p.relative_to(base).as_posix(): git_blob_sha1(p)
                for p in sorted(base.rglob("*"))
                if p.is_file()
            }
            record = json.dumps({"archive": source.url, "files": files}, indent=0)
            atomic_write(base / _FILES_RECORD, lambda t: t.write_text(record, encoding="utf-8"))
        elif differences := _differences(base, files):
            raise IntegrityError(
                f"{archive} does not hold the pinned {source.name} files: "
                f"{_summary(differences, len(files))}"
            )
        os.replace(base, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return files


def _recorded_files(dest: Path) -> dict[str, str] | None:
    try:
        files = json.loads((dest / _FILES_RECORD).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return files if isinstance(files, dict) else None


def _ensure_dataset(root: Path, source: _Source) -> tuple[Path, dict[str, str]]:
    """``root/source.folder`` with every file verified, and those files ``{path: blob id}``.

    A folder that fails verification is moved aside and unpacked again from the archive; an
    archive that fails is moved aside and downloaded again; a download that fails is moved aside
    and reported. Nothing is deleted.
    """
    dest = root / source.folder
    if dest.exists():
        files = source.files if source.files is not None else _recorded_files(dest)
        if files is None:
            problem = f"{dest / _FILES_RECORD}, the list of its verified files, is missing"
        elif differences := _differences(dest, files):
            problem = _summary(differences, len(files))
        else:
            return dest, files
        aside = move_aside(dest)
        log.warning("%s fails verification: %s. Moved it to %s", dest, problem, aside)
    archive = root / source.archive
    if archive.exists():
        try:
            return dest, _unpack(archive, dest, source)
        except IntegrityError as err:
            aside = move_aside(archive)
            log.warning("%s. Moved it to %s; downloading it again", err, aside)
    download_file(source.url, archive, sha256=source.sha256, size=source.size)
    try:
        return dest, _unpack(archive, dest, source)
    except IntegrityError as err:
        aside = move_aside(archive)
        raise type(err)(f"{err}. The download was moved to {aside}") from None


def _verified_only(split: DataSplit, base: Path, files: Mapping[str, str]) -> DataSplit:
    """``split`` without the clips that are not verified files (e.g. put in the folder later)."""
    items = []
    for item in split.items:
        try:
            verified = Path(item["wav"]).relative_to(base).as_posix() in files
        except ValueError:  # resolved outside base: a link
            verified = False
        if verified:
            items.append(item)
        else:
            log.warning("%s is not one of the verified files of %s: left out", item["wav"], base)
    return DataSplit(split.name, items, split.labels)


def _write_splits(root: Path, splits: list[DataSplit], label_csv: str) -> dict[str, DataSplit]:
    for split in splits:
        split.to_datafile(root / "datafiles" / f"{split.name}.json")
    splits[0].write_label_csv(root / label_csv)
    return {split.name: split for split in splits}


def prepare_esc50(root: str | Path) -> dict[str, DataSplit]:
    """Download ESC-50 into ``root`` (unless already there), verify it, and write, as the
    official ``prep_esc50.py``, ``datafiles/esc_{train,eval}_data_{fold}.json`` for the 5 folds
    and ``esc_class_labels_indices.csv`` (index = ESC-50 target, official mids ``/m/07rwjNN``).

    The clips stay at 44.1 kHz; the front end resamples them to 16 kHz when loading (the
    official recipe converts them with sox beforehand). Under ``torchrun`` process 0 downloads
    and the others wait (:func:`~ssast_teach.download.rank_zero_first`)."""
    root = Path(root).resolve()
    with rank_zero_first(f"ESC-50 in {root}"):
        base, files = _ensure_dataset(root, _github_source("ESC-50", "esc50_manifest.json"))
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
        splits = [_verified_only(s, base, files) for s in splits]
        return _write_splits(root, splits, "esc_class_labels_indices.csv")


def prepare_speechcommands_v2(root: str | Path) -> dict[str, DataSplit]:
    """Download Speech Commands V2 into ``root/speech_commands_v0.02`` (unless already there),
    verify it, and write ``datafiles/speechcommand_{train,valid,eval}_data.json`` from the
    official validation/testing lists (train = the rest) and
    ``speechcommands_class_labels_indices.csv`` (the 35 words, sorted, mids
    ``/speechcommands/{word}``). Under ``torchrun`` process 0 downloads and the others wait."""
    root = Path(root).resolve()
    source = _Source(
        name="Speech Commands v0.02",
        url=SPEECHCOMMANDS_V2_URL,
        archive="speech_commands_v0.02.tar.gz",
        folder="speech_commands_v0.02",
        top=None,
        files=None,
        sha256=SPEECHCOMMANDS_V2_SHA256,
        size=SPEECHCOMMANDS_V2_SIZE,
    )
    names = {
        "train": "speechcommand_train_data",
        "validation": "speechcommand_valid_data",
        "test": "speechcommand_eval_data",
    }
    with rank_zero_first(f"Speech Commands v0.02 in {root}"):
        base, files = _ensure_dataset(root, source)
        splits = []
        for split, name in names.items():
            s = _verified_only(_speech_commands_split(base, split, "speechcommands"), base, files)
            splits.append(DataSplit(name, s.items, s.labels))
        return _write_splits(root, splits, "speechcommands_class_labels_indices.csv")


def prepare_fsdd(root: str | Path) -> dict[str, DataSplit]:
    """Download the full Free Spoken Digit Dataset (6 speakers, 3000 recordings) into ``root``
    (unless already there), verify it, and write ``datafiles/fsdd_{train,test}_data.json``
    (takes 0-4 test) and ``fsdd_class_labels_indices.csv``. Under ``torchrun`` process 0
    downloads and the others wait."""
    root = Path(root).resolve()
    with rank_zero_first(f"FSDD in {root}"):
        base, files = _ensure_dataset(root, _github_source("FSDD", "fsdd_manifest.json"))
        splits = []
        for split in ("train", "test"):
            s = _verified_only(_fsdd_split(base / "recordings", split, "fsdd"), base, files)
            splits.append(DataSplit(f"fsdd_{split}_data", s.items, s.labels))
        return _write_splits(root, splits, "fsdd_class_labels_indices.csv")
