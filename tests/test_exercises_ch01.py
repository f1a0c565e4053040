"""Chapter 01 checkers: the library's answers pass, common wrong answers fail with a useful message."""

import math

import pytest
import torch
import torchaudio

from ssast_teach import audio
from ssast_teach.exercises import ExerciseError, ch01

# graded behaviour: a stub's check raises (tests/test_exercises_common.py covers the other)
pytestmark = pytest.mark.usefixtures("grading")


def _kaldi_frames(num_samples: int, rate: int) -> int:
    w = torch.randn(1, num_samples)
    return torchaudio.compliance.kaldi.fbank(
        w, sample_frequency=rate, num_mel_bins=23, dither=0.0, frame_shift=10
    ).shape[0]


def good_num_frames(num_samples, sample_rate=16000):
    window, shift = int(sample_rate * 0.025), int(sample_rate * 0.010)
    return 0 if num_samples < window else 1 + (num_samples - window) // shift


def good_mel_centres(num_mel_bins, low_hz=20.0, high_hz=8000.0):
    def mel(f):
        return 1127.0 * math.log(1 + f / 700.0)

    edges = torch.linspace(mel(low_hz), mel(high_hz), num_mel_bins + 2, dtype=torch.float64)
    return 700.0 * (torch.exp(edges[1:-1] / 1127.0) - 1)


# --- the reference answers themselves ---------------------------------------------------------


@pytest.mark.parametrize("n, rate", [(160000, 16000), (400, 16000), (559, 16000), (8000, 8000)])
def test_kaldi_num_frames_matches_torchaudio(n, rate):
    assert ch01.kaldi_num_frames(n, rate) == _kaldi_frames(n, rate)


def test_ten_seconds_give_998_frames():
    assert ch01.kaldi_num_frames(160000) == 998 == audio.fbank(torch.zeros(160000)).shape[0]


# --- correct answers pass -----------------------------------------------------------------------


@pytest.mark.parametrize("hidden", [False, True])
def test_correct_answers_pass(hidden, capsys):
    ch01.check_num_frames(good_num_frames, hidden=hidden)
    ch01.check_pad_or_cut(audio.pad_or_cut, hidden=hidden)
    ch01.check_normalize(lambda x, m, s: audio.normalize(x, (m, s)), hidden=hidden)
    ch01.check_mel_centres(good_mel_centres, hidden=hidden)
    lines = capsys.readouterr().out.splitlines()
    assert [line[:17] for line in lines] == [f"✓ ch01 exercise {k}" for k in (1, 2, 3, 4)]


def test_num_frames_accepts_a_one_element_tensor():
    ch01.check_num_frames(lambda n, r: torch.tensor(good_num_frames(n, r)))


def test_mel_centres_accepts_2595_log10_scale():
    def centres(n, low, high):
        mel = 2595 * torch.log10(1 + torch.tensor([low, high], dtype=torch.float64) / 700)
        return 700 * (10 ** (torch.linspace(mel[0], mel[1], n + 2)[1:-1] / 2595) - 1)

    ch01.check_mel_centres(centres, hidden=True)


# --- wrong answers fail with a message that names the mistake -----------------------------------


def _not_implemented(*args):
    raise NotImplementedError()


@pytest.mark.parametrize(
    "checker",
    [ch01.check_num_frames, ch01.check_pad_or_cut, ch01.check_normalize, ch01.check_mel_centres],
)
def test_not_implemented_is_reported(checker):
    with pytest.raises(ExerciseError, match="not implemented yet"):
        checker(_not_implemented)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda n, r: n // int(r * 0.010), "fit entirely"),
        (lambda n, r: 1 + (n - int(r * 0.025)) // int(r * 0.010) + 1, "returned 999, expected 998"),
        (lambda n, r: 998.5, "whole number"),
        (lambda n, r: str(good_num_frames(n, r)), "whole number"),
    ],
)
def test_num_frames_wrong(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        ch01.check_num_frames(wrong)


def test_num_frames_short_clip_needs_zero():
    with pytest.raises(ExerciseError, match="no frame at all"):
        ch01.check_num_frames(lambda n, r: 1 + (n - int(r * 0.025)) // int(r * 0.010), hidden=True)


def _pad_front(x, t):
    return torch.nn.functional.pad(x, (0, 0, max(0, t - x.shape[0]), 0))[-t:]


def _pad_with_mean(x, t):
    out = audio.pad_or_cut(x, t)
    out[x.shape[0] :] = x.mean()
    return out


def _pad_in_place(x, t):
    x.mul_(1.0)
    x.add_(1.0)
    return audio.pad_or_cut(x - 1.0, t)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (_pad_front, "padded at the start"),
        (_pad_with_mean, "not zeros"),
        (lambda x, t: audio.pad_or_cut(x, t)[:-1], r"has shape \(7, 4\), expected \(8, 4\)"),
        (lambda x, t: audio.pad_or_cut(x, t).double(), "dtype"),
        (lambda x, t: audio.pad_or_cut(x, t).numpy(), "should be a torch.Tensor"),
        (_pad_in_place, "changed its input"),
    ],
)
def test_pad_or_cut_wrong(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        ch01.check_pad_or_cut(wrong)


def test_pad_or_cut_keeping_the_last_frames_is_named():
    def keep_last(x, t):
        return x[-t:] if x.shape[0] >= t else audio.pad_or_cut(x, t)

    with pytest.raises(ExerciseError, match="kept the last 8 frames"):
        ch01.check_pad_or_cut(keep_last)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda x, m, s: (x - m) / s, "divides by 2 \\* std"),
        (lambda x, m, s: (x + m) / (2 * s), "subtracted, not added"),
        (lambda x, m, s: x - m / (2 * s), "subtract the mean first"),
        (lambda x, m, s: (x - m) / (2 * s) + 0.01, "wrong values"),
        (lambda x, m, s: x.sub_(m).div_(2 * s), "changed its input"),
    ],
)
def test_normalize_wrong(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        ch01.check_normalize(wrong)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda n, lo, hi: torch.linspace(lo, hi, n + 2)[1:-1], "evenly spaced in Hz"),
        (lambda n, lo, hi: good_mel_centres(n + 2, lo, hi)[:0].new_zeros(n + 2), "filter edges"),
        (lambda n, lo, hi: good_mel_centres(n, lo, hi)[:-1], "has shape"),
        (lambda n, lo, hi: good_mel_centres(n, lo, hi) + 5, "wrong values"),
    ],
)
def test_mel_centres_wrong(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        ch01.check_mel_centres(wrong)
