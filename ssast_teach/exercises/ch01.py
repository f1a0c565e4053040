"""Checkers for chapter 01 (audio to fbank): frame count, pad/cut, normalisation, mel centres.

Each checker runs the student's function on seeded cases and compares it with the library
(:mod:`ssast_teach.audio`) or torchaudio's Kaldi code; common mistakes get a message that says
what the official front end does instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torchaudio

from ssast_teach.audio import FRAME_LENGTH_MS, FRAME_SHIFT_MS, NORM_STATS, normalize, pad_or_cut
from ssast_teach.exercises import ExerciseError, call_student, check_tensor, checker, passed

__all__ = [
    "check_mel_centres",
    "check_normalize",
    "check_num_frames",
    "check_pad_or_cut",
    "kaldi_num_frames",
    "kaldi_mel_centres",
]


def kaldi_num_frames(num_samples: int, sample_rate: int = 16000) -> int:
    """Frames Kaldi's fbank makes from ``num_samples`` (25 ms window, 10 ms shift, only frames
    that fit entirely: ``snip_edges=True``); 0 when the clip is shorter than one window."""
    window = int(sample_rate * FRAME_LENGTH_MS / 1000)
    shift = int(sample_rate * FRAME_SHIFT_MS / 1000)
    return 0 if num_samples < window else 1 + (num_samples - window) // shift


def kaldi_mel_centres(
    num_mel_bins: int, low_hz: float = 20.0, high_hz: float = 8000.0, sample_rate: int = 16000
) -> torch.Tensor:
    """Centre frequencies in Hz of Kaldi's triangular mel filters, ``(num_mel_bins,)``."""
    _, centres = torchaudio.compliance.kaldi.get_mel_banks(
        num_mel_bins, 512, float(sample_rate), low_hz, high_hz, 100.0, -500.0, 1.0
    )
    return centres.flatten()  # (num_mel_bins,)


# ---------------------------------------------------------------------------------------------
# Exercise 1: number of frames


@checker()
def check_num_frames(num_frames: Callable[..., Any], hidden: bool = False) -> None:
    """``num_frames(num_samples, sample_rate)`` must give Kaldi's frame count."""
    cases = [(160000, 16000), (16000, 16000), (80016, 16000), (400, 16000), (8000, 8000)]
    if hidden:
        cases += [(399, 16000), (0, 16000), (559, 16000), (560, 16000), (44100 * 5, 44100)]
        cases += [(int(n), 16000) for n in torch.randint(400, 200000, (5,), generator=_gen(1))]
    for num_samples, rate in cases:
        case = f"num_frames({num_samples}, sample_rate={rate})"
        got = call_student(num_frames, num_samples, rate, case=case)
        expected = kaldi_num_frames(num_samples, rate)
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if isinstance(got, bool) or not isinstance(got, (int, float)) or got != int(got):
            raise ExerciseError(f"{case} should return a whole number, got {got!r}")
        got = int(got)
        if got == expected:
            continue
        window, shift = int(rate * FRAME_LENGTH_MS / 1000), int(rate * FRAME_SHIFT_MS / 1000)
        hint = (
            f"at {rate} Hz a frame is {window} samples and the shift {shift}; Kaldi keeps only "
            f"frames that fit entirely in the clip: the first takes {window} samples, each "
            f"further one {shift} more"
        )
        if expected == 0:
            hint = f"a clip shorter than one {window}-sample window has no frame at all"
        raise ExerciseError(f"{case} returned {got}, expected {expected}: {hint}")
    passed(1, 1, f"num_frames matches Kaldi's frame count on {len(cases)} cases")


# ---------------------------------------------------------------------------------------------
# Exercise 2: pad or cut


@checker()
def check_pad_or_cut(student_pad_or_cut: Callable[..., Any], hidden: bool = False) -> None:
    """``pad_or_cut(fbank, target_length)`` must zero-pad or cut at the end."""
    cases = [(5, 4, 8), (10, 4, 8), (8, 4, 8)]
    if hidden:
        cases += [(1, 128, 1024), (998, 128, 1024), (1200, 3, 1024), (98, 128, 128)]
    g = _gen(2)
    for frames, bins, target in cases:
        x = torch.randn(frames, bins, generator=g) - 6.0  # log-mel-like values, never 0
        original = x.clone()
        case = f"a ({frames}, {bins}) fbank with target_length={target}"
        got = call_student(student_pad_or_cut, x, target, case=case)
        if not torch.equal(x, original):
            raise ExerciseError(
                f"pad_or_cut changed its input on {case}; return a new tensor instead"
            )
        expected = pad_or_cut(original, target)
        if isinstance(got, torch.Tensor) and got.shape == expected.shape and frames < target:
            missing = target - frames
            if torch.equal(got[missing:], original) and not torch.equal(got[:frames], original):
                raise ExerciseError(
                    f"on {case} you padded at the start; the official code pads at the end "
                    "(the clip keeps its first frame at time 0)"
                )
            if torch.equal(got[:frames], original) and got[frames:].abs().max() > 0:
                raise ExerciseError(
                    f"on {case} the padded frames are not zeros; the official code pads with "
                    "0 before normalisation (they become (0 - mean) / (2 * std) afterwards)"
                )
        if (
            isinstance(got, torch.Tensor)
            and got.shape == expected.shape
            and frames > target
            and torch.equal(got, original[-target:])
        ):
            raise ExerciseError(
                f"on {case} you kept the last {target} frames; keep the first {target} "
                "(the official code cuts at the end)"
            )
        check_tensor("pad_or_cut(fbank, target_length)", got, expected, case=case, atol=0, rtol=0)
    passed(
        1, 2, f"pad_or_cut pads and cuts like ssast_teach.audio.pad_or_cut on {len(cases)} cases"
    )


# ---------------------------------------------------------------------------------------------
# Exercise 3: normalise with the dataset's statistics


@checker()
def check_normalize(normalize_fbank: Callable[..., Any], hidden: bool = False) -> None:
    """``normalize_fbank(fbank, mean, std)`` must give ``(fbank - mean) / (2 * std)``."""
    names = ["audioset", "esc50"] + (["speechcommands"] if hidden else [])
    g = _gen(3)
    cases = [(name, torch.randn(6, 4, generator=g) * 4 - 5) for name in names]
    if hidden:
        padded = torch.nn.functional.pad(torch.randn(3, 128, generator=g) * 4 - 5, (0, 0, 0, 5))
        cases.append(("audioset", padded))  # padded zeros must become (0 - mean) / (2 * std)
    for name, x in cases:
        mean, std = NORM_STATS[name]
        original = x.clone()
        case = f"a ({x.shape[0]}, {x.shape[1]}) fbank with the {name} stats ({mean}, {std})"
        got = call_student(normalize_fbank, x, mean, std, case=case)
        if not torch.equal(x, original):
            raise ExerciseError(
                f"normalize_fbank changed its input on {case}; return a new tensor instead"
            )
        expected = normalize(original, (mean, std))
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            wrong = {
                "you divided by std; the official code divides by 2 * std, so the result has "
                "std 0.5, not 1": (original - mean) / std,
                "the mean should be subtracted, not added": (original + mean) / (2 * std),
                "subtract the mean first, then divide: (fbank - mean) / (2 * std)": original
                - mean / (2 * std),
            }
            for message, value in wrong.items():
                if torch.allclose(got.detach().double(), value.double(), atol=1e-4):
                    raise ExerciseError(f"on {case}: {message}")
        check_tensor("normalize_fbank(fbank, mean, std)", got, expected, case=case, atol=1e-5)
    passed(1, 3, f"normalize_fbank matches ssast_teach.audio.normalize on {len(cases)} cases")


# ---------------------------------------------------------------------------------------------
# Exercise 4: centre frequencies of the mel filters


@checker()
def check_mel_centres(mel_centres_hz: Callable[..., Any], hidden: bool = False) -> None:
    """``mel_centres_hz(num_mel_bins, low_hz, high_hz)`` must give Kaldi's filter centres."""
    cases = [(128, 20.0, 8000.0), (40, 20.0, 8000.0), (23, 64.0, 4000.0)]
    if hidden:
        cases += [(80, 0.0, 8000.0), (128, 20.0, 7600.0), (10, 300.0, 3400.0)]
    for n, low, high in cases:
        case = f"mel_centres_hz({n}, low_hz={low}, high_hz={high})"
        got = call_student(mel_centres_hz, n, low, high, case=case)
        expected = kaldi_mel_centres(n, low, high)
        if isinstance(got, torch.Tensor) and got.shape == (n + 2,):
            raise ExerciseError(
                f"{case} returned {n + 2} values: those are the filter edges; the centres are "
                "all of them but the first and the last"
            )
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            hz_even = torch.linspace(low, high, n + 2)[1:-1]
            if torch.allclose(got.detach().double(), hz_even.double(), rtol=1e-3):
                raise ExerciseError(
                    f"on {case} the centres are evenly spaced in Hz; space the n + 2 edges "
                    "evenly in mel (1127 * ln(1 + f / 700)) and convert them back to Hz"
                )
        check_tensor(
            "mel_centres_hz(...)",
            got,
            expected,
            case=case,
            atol=1e-2,
            rtol=1e-4,
            check_dtype=False,
        )
    passed(1, 4, f"mel_centres_hz matches Kaldi's mel filter centres on {len(cases)} cases")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
