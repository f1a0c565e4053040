"""Checkers for chapter 01 (audio to fbank): the Kaldi fbank steps, pad/cut, normalisation,
and the extension, a SpecAugment time mask checked by its properties.

Each checker runs the student's function on seeded cases and compares it with the library
(:mod:`ssast_teach.audio`) or torchaudio's Kaldi code; common mistakes get a message that says
what the official front end does instead. Hidden cases are drawn from :func:`hidden_seed`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torchaudio

from ssast_teach.audio import NORM_STATS, normalize, pad_or_cut
from ssast_teach.exercises import (
    ExerciseError,
    call_student,
    check_tensor,
    check_with_hints,
    checker,
    hidden_seed,
    passed,
)

__all__ = ["check_fbank", "check_normalize", "check_pad_or_cut", "check_time_mask"]

SR = 16000
EPS = torch.finfo(torch.float32).eps
OFFICIAL_FBANK = dict(
    htk_compat=True, sample_frequency=SR, use_energy=False, window_type="hanning",
    num_mel_bins=128, dither=0.0, frame_shift=10,
)  # fmt: skip


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# Exercise 1: the Kaldi fbank, step by step


def _my_fbank(w: torch.Tensor) -> torch.Tensor:
    """(1, S) 16 kHz waveform -> (T, 128) Kaldi fbank with the official arguments."""
    return torchaudio.compliance.kaldi.fbank(w, **OFFICIAL_FBANK)  # (T, 128)


def _fbank_variant(
    w: torch.Tensor,
    *,
    window: torch.Tensor | None = None,
    preemphasis: float = 0.97,
    dc_first: bool = True,
    remove_dc: bool = True,
    window_first: bool = False,
    exponent: float = 2.0,
    floor: float = EPS,
    log: Callable[[torch.Tensor], torch.Tensor] = torch.log,
) -> torch.Tensor:
    """The fbank steps with one of them done another way: what a plausible mistake gives."""
    length, shift = 400, 160
    n = 1 + (w.shape[-1] - length) // shift
    x = w[0][shift * torch.arange(n)[:, None] + torch.arange(length)]  # (T, 400)
    if window is None:
        window = torch.hann_window(length, periodic=False)

    def emphasise(x: torch.Tensor) -> torch.Tensor:
        return x - preemphasis * torch.cat([x[:, :1], x[:, :-1]], dim=1)

    def centre(x: torch.Tensor) -> torch.Tensor:
        return x - x.mean(dim=1, keepdim=True) if remove_dc else x

    if window_first:
        x = emphasise(centre(x) * window)
    else:
        x = emphasise(centre(x)) if dc_first else centre(emphasise(x))
        x = x * window
    spectrum = torch.fft.rfft(torch.nn.functional.pad(x, (0, 512 - length))).abs() ** exponent
    banks, _ = torchaudio.compliance.kaldi.get_mel_banks(128, 512, float(SR), 20.0, 0.0,
                                                         100.0, -500.0, 1.0)  # (128, 256)
    return log(torch.clamp(spectrum[:, :256] @ banks.T, min=floor))  # (T, 128)


def _fbank_mistakes(w: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    hann = torch.hann_window(400, periodic=False)
    return [
        ("a periodic Hann window: torch.hann_window(400) is periodic by default, Kaldi's "
         "'hanning' is the symmetric one (periodic=False)",
         _fbank_variant(w, window=torch.hann_window(400))),
        ("the povey window (Kaldi's default); SSAST uses window_type='hanning'",
         _fbank_variant(w, window=hann**0.85)),
        ("no pre-emphasis: x[n] - 0.97 * x[n - 1] on every frame",
         _fbank_variant(w, preemphasis=0.0)),
        ("no DC removal: subtract each frame's mean first",
         _fbank_variant(w, remove_dc=False)),
        ("pre-emphasis before the DC removal; remove each frame's mean first",
         _fbank_variant(w, dc_first=False)),
        ("the window applied before pre-emphasis; window last, just before the FFT",
         _fbank_variant(w, window_first=True)),
        ("the magnitude spectrum |FFT|; Kaldi's fbank uses the power |FFT| ** 2",
         _fbank_variant(w, exponent=1.0)),
        ("log10; the fbank uses the natural log (torch.log)",
         _fbank_variant(w, log=torch.log10)),
        (f"a floor of 1e-10 on the mel energies; Kaldi's fbank floors them at float32 eps "
         f"({EPS:.3g}, torch.finfo(torch.float32).eps), so a filter with no energy reads "
         f"log(eps) = {math.log(EPS):.2f}, not log(1e-10) = {math.log(1e-10):.2f}",
         _fbank_variant(w, floor=1e-10)),
    ]  # fmt: skip


def _fbank_cases(hidden: bool) -> list[tuple[str, torch.Tensor]]:
    t = torch.arange(4000) / SR
    tone = 0.3 * torch.sin(2 * math.pi * 1030.0 * t)
    if not hidden:
        return [
            ("0.25 s of noise", 0.1 * torch.randn(1, 4000, generator=_gen(11))),
            ("a 1030 Hz tone plus a DC offset of 0.5", (tone + 0.5)[None]),
            ("0.05 s of digital silence (every filter at the floor)", torch.zeros(1, 800)),
            ("exactly one 400-sample frame", 0.2 * torch.randn(1, 400, generator=_gen(12))),
        ]
    g = _gen(hidden_seed(101))
    cases = []
    for k in range(4):
        n = int(torch.randint(400, 6000, (1,), generator=g))
        gain, offset = float(torch.rand(1, generator=g)) * 0.5, float(torch.randn(1, generator=g))
        w = gain * torch.randn(1, n, generator=g) + 0.2 * offset
        if k == 3:
            w[:, : n // 2] = 0.0  # a silent start: floored frames next to loud ones
        cases.append((f"{n} samples of noise (gain {gain:.2f}, offset {0.2 * offset:+.2f})", w))
    return cases


@checker(reference=_my_fbank)
def check_fbank(my_fbank: Callable[..., Any], hidden: bool = False) -> None:
    """``my_fbank(w (1, S)) -> (T, 128)`` must equal Kaldi's fbank with the official arguments."""
    cases = _fbank_cases(hidden)
    for what, w in cases:
        case = f"a (1, {w.shape[1]}) waveform: {what}"
        got = call_student(my_fbank, w.clone(), case=case)
        expected = _my_fbank(w)
        if isinstance(got, torch.Tensor) and got.is_floating_point() and not got.isfinite().all():
            raise ExerciseError(
                f"my_fbank on {case} holds -inf or nan: a filter with no energy gives log(0); "
                "floor the mel energies at float32 eps before the log (torch.clamp(..., min=EPS))"
            )
        if isinstance(got, torch.Tensor) and got.shape == expected.shape[::-1] != expected.shape:
            raise ExerciseError(
                f"my_fbank on {case} has shape {tuple(got.shape)}; a fbank is (frames, 128) = "
                f"{tuple(expected.shape)}: time first"
            )
        check_with_hints("my_fbank(w)", got, expected, _fbank_mistakes(w), case=case,
                         atol=1e-3, rtol=1e-4)  # fmt: skip
    what = "hidden waveforms" if hidden else "waveforms: noise, a tone with DC, silence, one frame"
    passed(1, 1, f"my_fbank matches torchaudio.compliance.kaldi.fbank on {len(cases)} {what}")


# ---------------------------------------------------------------------------------------------
# Exercise 2: pad or cut


@checker(reference=pad_or_cut)
def check_pad_or_cut(student_pad_or_cut: Callable[..., Any], hidden: bool = False) -> None:
    """``pad_or_cut(fbank, target_length)`` must zero-pad or cut at the end."""
    cases = [(5, 4, 8), (10, 4, 8), (8, 4, 8), (1, 3, 6)]
    if hidden:
        g = _gen(hidden_seed(2))
        cases = [(998, 128, 1024), (1200, 3, 1024)]
        for _ in range(4):
            frames, target = (int(v) for v in torch.randint(1, 300, (2,), generator=g))
            cases.append((frames, int(torch.randint(1, 9, (1,), generator=g)), target))
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
    what = "hidden cases" if hidden else "cases: shorter, longer, equal, one frame"
    passed(1, 2, f"pad_or_cut pads and cuts like ssast_teach.audio.pad_or_cut on {len(cases)} {what}")


# ---------------------------------------------------------------------------------------------
# Exercise 3: normalise with the dataset's statistics


def _normalize_fbank(fbank: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    return normalize(fbank, (mean, std))


@checker(reference=_normalize_fbank)
def check_normalize(normalize_fbank: Callable[..., Any], hidden: bool = False) -> None:
    """``normalize_fbank(fbank, mean, std)`` must give ``(fbank - mean) / (2 * std)``."""
    g = _gen(hidden_seed(3) if hidden else 3)
    cases = [(name, *NORM_STATS[name]) for name in ("audioset", "esc50")]
    if hidden:
        cases = [("speechcommands", *NORM_STATS["speechcommands"])]
        cases += [("random", float(torch.randn(1, generator=g) * 3 - 5),
                   float(torch.rand(1, generator=g) * 4 + 1)) for _ in range(2)]  # fmt: skip
    inputs = [torch.randn(6, 4, generator=g) * 4 - 5 for _ in cases]
    padded = torch.nn.functional.pad(torch.randn(3, 128, generator=g) * 4 - 5, (0, 0, 0, 5))
    cases.append(("audioset", *NORM_STATS["audioset"]))  # padded zeros: (0 - mean) / (2 * std)
    inputs.append(padded)
    for (name, mean, std), x in zip(cases, inputs, strict=True):
        original = x.clone()
        case = f"a ({x.shape[0]}, {x.shape[1]}) fbank with the {name} stats ({mean:.4f}, {std:.4f})"
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
    what = "hidden cases" if hidden else "cases, padded frames included"
    passed(1, 3, f"normalize_fbank matches ssast_teach.audio.normalize on {len(cases)} {what}")


# ---------------------------------------------------------------------------------------------
# Exercise 4 (extension): a SpecAugment time mask, checked by its properties

# Tolerances from measurement: 1000 widths drawn uniformly from [0, max_width) for max_width
# 12, 20 and 30 (the visible and hidden range), 200 seeds each: mean width / max_width in
# [0.437, 0.511] (expected 0.458 to 0.483), std / max_width in [0.276, 0.301] (expected about
# 0.289). A fixed width has std 0, "always max_width - 1" a mean near 1; an off-by-one width
# from [1, max_width] is caught exactly by the max_width=1 case (it must mask nothing).
DRAWS = 1000
MEAN_WIDTH = (0.41, 0.54)  # of max_width
MIN_STD_WIDTH = 0.2  # of max_width


def _spans(fn: Callable[..., Any], x: torch.Tensor, max_width: int, seed: int, case: str,
           salt: int) -> tuple[torch.Tensor, int, int]:  # fmt: skip
    """Run ``fn`` once with a seeded generator (the global RNG seeded with ``salt``, restored
    after); check what one time mask must be; return (output, start, width)."""
    original = x.clone()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5000 + salt)
        got = call_student(fn, x, max_width, generator=_gen(seed), case=case)
    if not torch.equal(x, original):
        raise ExerciseError(f"time_mask changed its input on {case}; return a new tensor")
    if not isinstance(got, torch.Tensor):
        raise ExerciseError(f"time_mask on {case} should return a torch.Tensor, got "
                            f"{type(got).__name__}")  # fmt: skip
    if got.shape != x.shape or got.dtype != x.dtype:
        raise ExerciseError(f"time_mask on {case} returned {tuple(got.shape)} {got.dtype}; "
                            f"keep the fbank's shape {tuple(x.shape)} and dtype {x.dtype}")  # fmt: skip
    changed = (got != x).any(dim=1)  # (T,) frames the mask touched
    frames = changed.nonzero().flatten()
    if len(frames) and not bool((got[frames] == 0).all()):
        raise ExerciseError(
            f"time_mask on {case} changed frames without setting them to 0: a masked frame is "
            "0 in every mel bin (SpecAugment runs before normalisation, with mask value 0)"
        )
    if len(frames) and int(frames[-1] - frames[0]) + 1 != len(frames):
        raise ExerciseError(
            f"time_mask on {case} masked frames {frames.tolist()}: one mask is ONE span of "
            "consecutive frames"
        )
    width = len(frames)
    if width > min(max_width - 1, x.shape[0]):
        raise ExerciseError(
            f"time_mask on {case} masked {width} frames; the width is drawn from 0 to "
            f"max_width - 1 = {max_width - 1} (and is never more than the {x.shape[0]} frames "
            "there are)"
        )
    return got, int(frames[0]) if width else -1, width


@checker()
def check_time_mask(fn: Callable[..., Any], hidden: bool = False) -> None:
    """``fn(fbank (T, F), max_width, generator=None) -> (T, F)``: one span of a random number
    of frames, up to max_width, set to 0, at a random place; by properties, not equality."""
    g = _gen(hidden_seed(4) if hidden else 4)
    frames, bins, max_width = 50, 6, 20
    if hidden:
        frames, max_width = (int(v) for v in torch.randint(12, 31, (2,), generator=g) * torch.tensor([3, 1]))
    # a span longer than the clip, a max_width of 1 (nothing to mask), a one-frame clip
    cases = [(frames, bins, max_width), (10, 4, 30), (7, 3, 1), (1, 5, 3)]
    for k, (t, f, m) in enumerate(cases):
        x = torch.randn(t, f, generator=g) * 3 - 6  # never exactly 0
        case = f"a ({t}, {f}) fbank with max_width={m}"
        first, _, _ = _spans(fn, x, m, seed=k, case=case, salt=0)
        again, _, _ = _spans(fn, x, m, seed=k, case=case, salt=1)
        if not torch.equal(first, again):
            raise ExerciseError(
                f"time_mask on {case} gives different masks for two generators with the same "
                "seed: draw every random number from `generator`, not from the global RNG"
            )
    x = torch.randn(frames, bins, generator=g) * 3 - 6
    case = f"a ({frames}, {bins}) fbank with max_width={max_width}"
    seed0 = int(torch.randint(1 << 30, (1,), generator=g))
    draws = [_spans(fn, x, max_width, seed=seed0 + d, case=case, salt=d) for d in range(DRAWS)]
    widths = torch.tensor([float(w) for _, _, w in draws])  # (DRAWS,)
    covered = torch.stack([(out != x).any(dim=1) for out, _, _ in draws]).float()  # (DRAWS, T)
    mean, std = (widths.mean() / max_width).item(), (widths.std() / max_width).item()
    if not MEAN_WIDTH[0] <= mean <= MEAN_WIDTH[1]:
        raise ExerciseError(
            f"over {DRAWS} masks of {case} the mean width is {mean:.2f} * max_width; a width "
            f"drawn uniformly from 0 to max_width - 1 gives {(max_width - 1) / 2 / max_width:.3f}"
            " * max_width"
        )
    if std < MIN_STD_WIDTH:
        raise ExerciseError(
            f"over {DRAWS} masks of {case} the width hardly varies (std {std:.2f} * max_width): "
            "draw a new width for every mask, uniformly from 0 to max_width - 1"
        )
    ends = covered[:, 0].mean().item(), covered[:, -1].mean().item()
    if min(ends) == 0:
        raise ExerciseError(
            f"over {DRAWS} masks of {case} the {'first' if ends[0] == 0 else 'last'} frame is "
            "never masked: draw the start uniformly among every place where the span fits, "
            "from 0 to T - width"
        )
    what = "hidden cases" if hidden else f"cases and {DRAWS} seeded draws"
    passed(1, 4, f"time_mask masks one reproducible span of uniform width anywhere ({what})")
