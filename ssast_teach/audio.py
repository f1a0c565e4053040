"""Chapter 01: the SSAST front end, from an audio file to the ``(T, 128)`` tensor the model reads.

The official order (``src/dataloader.py``), one small function per step::

    load_audio -> [mixup_waveforms] -> fbank -> pad_or_cut -> [spec_augment] -> normalize
    -> [add_noise]

Steps in brackets are training-only augmentations. :class:`FrontEnd` composes them from one
:class:`FrontEndConfig`. Every random step takes an optional ``torch.Generator``; without one it
draws from torch's global generator, so ``torch.manual_seed`` makes a run repeatable.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

__all__ = [
    "AudioLoadError",
    "FrontEnd",
    "FrontEndConfig",
    "NORM_STATS",
    "PCM_SCALING",
    "add_noise",
    "as_float_waveform",
    "compute_norm_stats",
    "fbank",
    "load_audio",
    "mixup_waveforms",
    "normalize",
    "norm_stats",
    "pad_or_cut",
    "sample_mixup_lambda",
    "spec_augment",
    "to_mono",
]

FRAME_LENGTH_MS = 25.0  # kaldi fbank's default window, kept by the official code
FRAME_SHIFT_MS = 10.0

# Dataset fbank mean and std: --dataset_mean / --dataset_std of the official recipe scripts
# (egs/*/run_*.sh), read by src/dataloader.py.
NORM_STATS: dict[str, tuple[float, float]] = {
    "audioset": (-4.2677393, 4.5689974),  # also used for AudioSet+LibriSpeech pretraining
    "esc50": (-6.6268077, 5.358466),
    "speechcommands": (-6.845978, 5.5654526),
}

AudioSource = str | Path | torch.Tensor | np.ndarray


class AudioLoadError(ValueError):
    """Audio that cannot become a usable waveform; the message names the file and the problem."""


# ---------------------------------------------------------------------------------------------
# Loading


def frame_samples(sample_rate: int) -> int:
    """Samples in one 25 ms fbank frame (400 at 16 kHz); shorter audio has no frame at all."""
    return int(sample_rate * FRAME_LENGTH_MS / 1000)


# Integer PCM dtypes as ``(offset, scale)``: samples become ``(x - offset) / scale`` in [-1, 1),
# the scaling soundfile's float reading of the same file uses (8-bit WAV is unsigned, 128 = 0).
PCM_SCALING: dict[str, tuple[int, int]] = {
    "int16": (0, 2**15),
    "int32": (0, 2**31),
    "uint8": (128, 2**7),
    "int8": (0, 2**7),
}


def as_float_waveform(
    waveform: torch.Tensor | np.ndarray, name: str = "waveform"
) -> torch.Tensor:
    """``waveform`` as a float tensor: float samples are kept as they are (dtype too); integer
    PCM (int16 from ``scipy.io.wavfile.read``, say) is scaled into [-1, 1) float32 by its dtype
    (:data:`PCM_SCALING`). Any other dtype (bool, int64, complex...) raises AudioLoadError (a
    ValueError) naming ``name``. A plain list of samples is taken as float."""
    if isinstance(waveform, np.ndarray):
        dtype, is_float = waveform.dtype.name, waveform.dtype.kind == "f"
    elif isinstance(waveform, torch.Tensor):
        dtype, is_float = str(waveform.dtype).removeprefix("torch."), waveform.is_floating_point()
    else:
        return torch.as_tensor(waveform, dtype=torch.float32)
    if is_float:
        return torch.as_tensor(waveform)
    if dtype not in PCM_SCALING:
        raise AudioLoadError(
            f"{name}: dtype {dtype} is not audio samples; expected float samples in [-1, 1] or "
            f"integer PCM ({', '.join(PCM_SCALING)}), which is scaled by its dtype"
        )
    offset, scale = PCM_SCALING[dtype]
    if isinstance(waveform, np.ndarray):
        waveform = torch.from_numpy(waveform.astype(np.float64))  # any byte order, a copy
    return ((waveform.double() - offset) / scale).float()  # exact in float64, then rounded once


def to_mono(
    waveform: torch.Tensor | np.ndarray,
    sample_rate: int,
    target_rate: int = 16000,
    name: str = "waveform",
) -> torch.Tensor:
    """Check a ``(S,)`` or channels-first ``(C, S)`` waveform; return it ``(1, S')`` float32, mono,
    resampled to ``target_rate``. Integer PCM is scaled into [-1, 1) by its dtype
    (:func:`as_float_waveform`). ``name`` is used in error messages."""
    w = as_float_waveform(waveform, name).to(torch.float32)
    if w.dim() == 1:
        w = w.unsqueeze(0)  # (1, S)
    if w.dim() != 2:
        raise AudioLoadError(f"{name}: expected shape (S,) or (channels, S), got {tuple(w.shape)}")
    if w.shape[1] == 0:
        raise AudioLoadError(f"{name}: has no samples")
    if not torch.isfinite(w).all():
        raise AudioLoadError(f"{name}: contains NaN or infinite samples")
    w = w.mean(dim=0, keepdim=True)  # (1, S) average of the channels
    if sample_rate != target_rate:
        w = torchaudio.functional.resample(w, sample_rate, target_rate)  # (1, S')
    need = frame_samples(target_rate)
    if w.shape[1] < need:
        raise AudioLoadError(
            f"{name}: too short, {w.shape[1]} samples at {target_rate} Hz is less than one "
            f"{FRAME_LENGTH_MS:g} ms frame ({need} samples)"
        )
    return w


def load_audio(path: str | Path, sample_rate: int = 16000) -> torch.Tensor:
    """Read an audio file as a ``(1, S)`` float32 mono waveform at ``sample_rate``.

    Integer formats are scaled into [-1, 1); any rate is resampled; channels are averaged.
    Raises FileNotFoundError for a missing file and AudioLoadError for anything unusable.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    if path.stat().st_size == 0:
        raise AudioLoadError(f"{path}: the file is empty (0 bytes)")
    try:
        data, file_rate = sf.read(path, dtype="float32", always_2d=True)  # (S, C)
    except (sf.SoundFileError, RuntimeError) as err:
        # soundfile's own message ("Error opening ...") hides which problem it was.
        reason = str(err).split(": ")[-1]
        raise AudioLoadError(f"{path}: not a readable audio file ({reason})") from None
    return to_mono(data.T, file_rate, sample_rate, name=str(path))


# ---------------------------------------------------------------------------------------------
# Features


def fbank(
    waveform: torch.Tensor | np.ndarray, sample_rate: int = 16000, num_mel_bins: int = 128
) -> torch.Tensor:
    """Kaldi log-mel filterbank of a ``(S,)`` or ``(1, S)`` waveform: ``(T, num_mel_bins)``.

    Integer PCM is scaled into [-1, 1) by its dtype first (:func:`as_float_waveform`). The
    waveform's own mean is removed first. 10 ms hop, 25 ms Hanning window: 10.0 s at 16 kHz
    gives 998 frames.
    """
    waveform = as_float_waveform(waveform, "waveform")
    if waveform.dim() == 1:
        waveform = waveform.unsqueeze(0)  # (1, S)
    if waveform.dim() != 2 or waveform.shape[0] != 1:
        raise ValueError(
            f"fbank expects a mono waveform (S,) or (1, S), got {tuple(waveform.shape)}"
        )
    waveform = waveform - waveform.mean()
    return torchaudio.compliance.kaldi.fbank(
        waveform,
        htk_compat=True,
        sample_frequency=sample_rate,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=num_mel_bins,
        dither=0.0,
        frame_shift=FRAME_SHIFT_MS,
    )  # (T, num_mel_bins)


def pad_or_cut(fbank: torch.Tensor, target_length: int) -> torch.Tensor:
    """Zero-pad or cut a ``(T, F)`` fbank at the end to ``(target_length, F)``."""
    missing = target_length - fbank.shape[0]
    if missing > 0:
        return torch.nn.functional.pad(fbank, (0, 0, 0, missing))  # (target_length, F)
    return fbank[:target_length]  # (target_length, F)


def norm_stats(stats: str | tuple[float, float]) -> tuple[float, float]:
    """``(mean, std)`` from a name in :data:`NORM_STATS` or a pair."""
    if isinstance(stats, str):
        if stats not in NORM_STATS:
            raise ValueError(f"unknown norm stats {stats!r}; expected one of {sorted(NORM_STATS)}")
        return NORM_STATS[stats]
    mean, std = stats
    if not std > 0:
        raise ValueError(f"norm stats std must be positive, got {std}")
    return float(mean), float(std)


def normalize(fbank: torch.Tensor, stats: str | tuple[float, float] = "audioset") -> torch.Tensor:
    """``(fbank - mean) / (2 * std)``: the official scaling, to mean 0 and std 0.5."""
    mean, std = norm_stats(stats)
    return (fbank - mean) / (2 * std)


def compute_norm_stats(
    fbanks_or_paths: Iterable[torch.Tensor | str | Path],
    *,
    sample_rate: int = 16000,
    num_mel_bins: int = 128,
    target_length: int | None = None,
) -> tuple[float, float]:
    """Mean and std of every fbank value of your own data, streamed clip by clip.

    Items are fbanks ``(T, F)`` or audio paths (loaded and turned into fbanks here). The result
    is the exact mean and (unbiased) std over all values of all clips, merged in float64. The
    official stats were measured on the dataloader's output, i.e. after padding/cutting to
    ``target_length``; pass ``target_length`` to count those padded zeros the same way.
    """
    count, mean, m2 = 0, 0.0, 0.0
    for item in fbanks_or_paths:
        if isinstance(item, (str, Path)):
            item = fbank(load_audio(item, sample_rate), sample_rate, num_mel_bins)
        if target_length is not None:
            item = pad_or_cut(item, target_length)
        x = item.detach().double().flatten()
        n = x.numel()
        if n == 0:
            continue
        clip_mean = float(x.mean())
        clip_m2 = float(((x - clip_mean) ** 2).sum())
        delta = clip_mean - mean
        total = count + n
        # Chan et al.'s pairwise update: stable however many clips are merged.
        mean += delta * n / total
        m2 += clip_m2 + delta**2 * count * n / total
        count = total
    if count < 2:
        raise ValueError("compute_norm_stats needs at least two fbank values")
    return mean, math.sqrt(m2 / (count - 1))


# ---------------------------------------------------------------------------------------------
# Augmentation (training only)


def _seed_from(generator: torch.Generator | None) -> int:
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=device))


@contextmanager
def _global_rng_from(generator: torch.Generator | None) -> Iterator[None]:
    """Run torchaudio's transforms, which draw from the global generator, from ``generator``."""
    if generator is None:
        yield
        return
    seed = _seed_from(generator)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def spec_augment(
    fbank: torch.Tensor, freqm: int, timem: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """SpecAugment on a ``(T, F)`` fbank: one frequency mask up to ``freqm`` bins, then one time
    mask up to ``timem`` frames (0 turns a mask off), filled with 0 before normalisation."""
    x = fbank.transpose(0, 1).unsqueeze(0)  # (1, F, T) as torchaudio expects
    with _global_rng_from(generator):
        if freqm:
            x = torchaudio.transforms.FrequencyMasking(freqm)(x)
        if timem:
            x = torchaudio.transforms.TimeMasking(timem)(x)
    return x.squeeze(0).transpose(0, 1)  # (T, F)


def sample_mixup_lambda(generator: torch.Generator | None = None) -> float:
    """The mixup weight of the first clip, lambda ~ Beta(10, 10)."""
    return float(np.random.default_rng(_seed_from(generator)).beta(10.0, 10.0))


def mixup_waveforms(w1: torch.Tensor, w2: torch.Tensor, lam: float) -> torch.Tensor:
    """``lam * w1 + (1 - lam) * w2`` on ``(1, S)`` or ``(S,)`` waveforms, official style.

    Each clip loses its mean first; the second is then zero-padded or cut to the first's
    length; the mix loses its mean again. The result has ``w1``'s shape. Integer PCM is scaled
    into [-1, 1) by its dtype first (:func:`as_float_waveform`).
    """
    w1, w2 = as_float_waveform(w1, "w1"), as_float_waveform(w2, "w2")
    w1 = w1 - w1.mean()
    w2 = w2 - w2.mean()
    n = w1.shape[-1]
    w2 = torch.nn.functional.pad(w2, (0, max(0, n - w2.shape[-1])))[..., :n]  # (..., S1)
    mixed = lam * w1 + (1 - lam) * w2.reshape(w1.shape)
    return mixed - mixed.mean()


def add_noise(fbank: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The official "noise" augmentation on a normalised ``(T, F)`` fbank: add ``U(0,1) * r / 10``
    (one ``r ~ U(0,1)`` per clip), then roll along time by an integer in [-10, 10)."""
    r = torch.rand((), generator=generator)
    noise = torch.rand(fbank.shape, generator=generator) * r / 10  # (T, F)
    shift = int(torch.randint(-10, 10, (), generator=generator))
    # The roll is circular, as in the official code: frames leaving one end re-enter at the other.
    return torch.roll(fbank + noise.to(fbank), shift, dims=0)


# ---------------------------------------------------------------------------------------------
# Composition


@dataclass(frozen=True)
class FrontEndConfig:
    """Front-end settings; defaults are the pretraining ones of the official scripts."""

    sample_rate: int = 16000  # all official data is 16 kHz
    num_mel_bins: int = 128  # --num_mel_bins 128
    target_length: int = 1024  # --target_length: 1024 AudioSet/pretraining, 512 ESC-50, 128 SC
    norm_stats: str | tuple[float, float] = "audioset"  # --dataset_mean / --dataset_std
    freqm: int = 0  # --freqm, SpecAugment frequency mask (0 = off, as in pretraining)
    timem: int = 0  # --timem, SpecAugment time mask
    mixup: float = 0.0  # --mixup, probability that a training clip is mixed with another
    noise: bool = False  # --noise, the fbank noise + time-roll augmentation

    @classmethod
    def for_dataset(cls, name: str, **overrides: object) -> FrontEndConfig:
        """The official recipe's front end for ``audioset``, ``esc50``, ``speechcommands`` or
        ``pretrain`` (the official ``egs/*/run_*.sh`` scripts' arguments); keyword arguments
        override single fields."""
        presets = {
            "pretrain": cls(),
            "audioset": cls(target_length=1024, freqm=48, timem=192, mixup=0.5, noise=False),
            "esc50": cls(target_length=512, norm_stats="esc50", freqm=24, timem=96, noise=True),
            "speechcommands": cls(
                target_length=128,
                norm_stats="speechcommands",
                freqm=48,
                timem=48,
                mixup=0.6,
                noise=True,
            ),
        }
        if name not in presets:
            raise ValueError(f"no front-end preset {name!r}; expected one of {sorted(presets)}")
        return replace(presets[name], **overrides)


class FrontEnd:
    """Audio (a path, or a waveform with its rate) to the model input ``(target_length, F)``."""

    def __init__(self, config: FrontEndConfig | None = None):
        self.config = config if config is not None else FrontEndConfig()
        self.stats = norm_stats(self.config.norm_stats)

    def waveform(
        self, source: AudioSource, sample_rate: int | None = None, name: str = "source"
    ) -> torch.Tensor:
        """A path is loaded; a waveform needs its ``sample_rate`` (integer PCM is scaled into
        [-1, 1) by its dtype). Returns ``(1, S)`` mono at the configured rate."""
        if isinstance(source, (str, Path)):
            return load_audio(source, self.config.sample_rate)
        if sample_rate is None:
            raise ValueError(
                "a waveform needs its sample_rate, e.g. frontend(w, sample_rate=16000)"
            )
        return to_mono(source, sample_rate, self.config.sample_rate, name=name)

    def raw_fbank(self, source: AudioSource, sample_rate: int | None = None) -> torch.Tensor:
        """The fbank before pad/cut, augmentation and normalisation: ``(T, F)`` (cacheable)."""
        w = self.waveform(source, sample_rate)  # (1, S)
        return fbank(w, self.config.sample_rate, self.config.num_mel_bins)  # (T, F)

    def finish(
        self, raw: torch.Tensor, training: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Pad/cut, SpecAugment (training), normalise, noise (training): ``(target_length, F)``."""
        c = self.config
        x = pad_or_cut(raw, c.target_length)  # (target_length, F)
        if training:
            x = spec_augment(x, c.freqm, c.timem, generator)
        x = normalize(x, self.stats)
        if training and c.noise:
            x = add_noise(x, generator)
        return x

    def __call__(
        self,
        source: AudioSource,
        sample_rate: int | None = None,
        training: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        return self.finish(self.raw_fbank(source, sample_rate), training, generator)

    def mixup(
        self,
        source1: AudioSource,
        source2: AudioSource,
        sample_rate: int | None = None,
        training: bool = True,
        lam: float | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, float]:
        """Mix two clips on the waveform (lambda ~ Beta(10, 10) unless given) and return
        ``(fbank (target_length, F), lam)``; mix the labels with the same ``lam``."""
        if lam is None:
            lam = sample_mixup_lambda(generator)
        w = mixup_waveforms(
            self.waveform(source1, sample_rate, "source1"),
            self.waveform(source2, sample_rate, "source2"),
            lam,
        )  # (1, S1)
        raw = fbank(w, self.config.sample_rate, self.config.num_mel_bins)  # (T, F)
        return self.finish(raw, training, generator), lam
