"""Chapter 01 checkers: the worked solutions pass, common wrong answers fail with a message that
names the mistake, a stub is reported, and the hidden cases follow the grader's seed."""

import pytest
import torch
import torchaudio.compliance.kaldi as kaldi

from ssast_teach import audio
from ssast_teach.exercises import GRADER_SEED_ENV, ExerciseError, ch01

# graded behaviour: a stub's check raises (tests/test_exercises_common.py covers the other)
pytestmark = pytest.mark.usefixtures("grading")

SR = 16000
EPS = torch.finfo(torch.float32).eps
OFFICIAL = dict(htk_compat=True, sample_frequency=SR, use_energy=False, window_type="hanning",
                num_mel_bins=128, dither=0.0, frame_shift=10)  # fmt: skip
MEL_BANKS = kaldi.get_mel_banks(128, 512, SR, 20.0, 0.0, 100.0, -500.0, 1.0)[0]  # (128, 256)


def fbank_steps(w, window=None, preemph=0.97, dc=True, exponent=2, log=torch.log, floor=True):
    """The chapter's my_fbank (the worked solution), with one step changeable."""
    n = 1 + (w.shape[-1] - 400) // 160
    x = w[0][160 * torch.arange(n)[:, None] + torch.arange(400)]  # (T, 400)
    if dc:
        x = x - x.mean(dim=1, keepdim=True)
    x = x - preemph * torch.cat([x[:, :1], x[:, :-1]], dim=1)
    x = x * (torch.hann_window(400, periodic=False) if window is None else window)
    power = torch.fft.rfft(torch.nn.functional.pad(x, (0, 112))).abs() ** exponent  # (T, 257)
    mel = power[:, :256] @ MEL_BANKS.T
    return log(torch.clamp(mel, min=EPS) if floor else mel)  # (T, 128)


def time_mask(fbank, max_width, generator=None):
    """The worked solution of the extension."""
    frames = fbank.shape[0]
    width = min(int(torch.randint(max_width, (1,), generator=generator)), frames)
    start = int(torch.randint(frames - width + 1, (1,), generator=generator))
    out = fbank.clone()
    out[start : start + width] = 0
    return out


def not_implemented(*args, **kwargs):
    raise NotImplementedError()


# --- the worked solutions pass ----------------------------------------------------------------


@pytest.mark.parametrize("hidden", [False, True])
def test_worked_solutions_pass(hidden, capsys):
    assert ch01.check_fbank(fbank_steps, hidden=hidden) is fbank_steps
    assert ch01.check_pad_or_cut(audio.pad_or_cut, hidden=hidden) is audio.pad_or_cut
    ch01.check_normalize(lambda x, m, s: (x - m) / (2 * s), hidden=hidden)
    assert ch01.check_time_mask(time_mask, hidden=hidden) is None
    lines = capsys.readouterr().out.splitlines()
    assert [line[:17] for line in lines] == [f"✓ ch01 exercise {k}" for k in (1, 2, 3, 4)]


def test_the_library_itself_passes_as_my_fbank():
    ch01.check_fbank(lambda w: kaldi.fbank(w, **OFFICIAL), hidden=True)


def test_a_torchaudio_style_time_mask_passes_if_it_can_reach_the_last_frame():
    def continuous(fbank, max_width, generator=None):
        width = min(int(torch.rand(1, generator=generator) * max_width), fbank.shape[0])
        start = int(torch.rand(1, generator=generator) * (fbank.shape[0] - width + 1))
        out = fbank.clone()
        out[start : start + width] = 0
        return out

    ch01.check_time_mask(continuous)


# --- a stub is reported; outside grading the chapter goes on with the library's version -------


@pytest.mark.parametrize(
    "check", [ch01.check_fbank, ch01.check_pad_or_cut, ch01.check_normalize, ch01.check_time_mask]
)
def test_a_stub_is_not_implemented(check):
    with pytest.raises(ExerciseError, match="not implemented yet"):
        check(not_implemented)


def test_outside_grading_a_stub_gives_the_library_version(monkeypatch, capsys):
    monkeypatch.delenv("SSAST_TEACH_GRADING")
    w = 0.1 * torch.randn(1, 1000)
    fallback = ch01.check_fbank(not_implemented)
    torch.testing.assert_close(fallback(w), kaldi.fbank(w, **OFFICIAL))
    assert ch01.check_pad_or_cut(not_implemented) is audio.pad_or_cut
    x = torch.randn(3, 4)
    torch.testing.assert_close(ch01.check_normalize(not_implemented)(x, -4.0, 2.0), (x + 4) / 4)
    assert ch01.check_time_mask(not_implemented) is None
    out = capsys.readouterr().out
    assert out.count("not implemented yet") == 4
    assert out.count("goes on with the library's version") == 3


# --- hidden cases come from the grader's seed --------------------------------------------------


def _seen_inputs(check, fn, monkeypatch, seed):
    monkeypatch.setenv(GRADER_SEED_ENV, str(seed))
    seen = []

    def spy(x, *args, **kwargs):
        seen.append((x.clone(), args))
        return fn(x, *args, **kwargs)

    check(spy, hidden=True)
    return seen


@pytest.mark.parametrize(
    "check, fn",
    [
        (ch01.check_fbank, fbank_steps),
        (ch01.check_pad_or_cut, audio.pad_or_cut),
        (ch01.check_normalize, lambda x, m, s: (x - m) / (2 * s)),
        (ch01.check_time_mask, time_mask),
    ],
    ids=["fbank", "pad_or_cut", "normalize", "time_mask"],
)
def test_hidden_cases_change_with_the_grader_seed(check, fn, monkeypatch):
    a = _seen_inputs(check, fn, monkeypatch, 1)
    b = _seen_inputs(check, fn, monkeypatch, 2)
    assert a and b
    same = len(a) == len(b) and all(
        x.shape == y.shape and torch.equal(x, y) and p == q for (x, p), (y, q) in zip(a, b, strict=True)
    )
    assert not same


# --- wrong answers fail with a message that names the mistake ---------------------------------


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda w: fbank_steps(w, window=torch.hann_window(400)), "periodic Hann"),
        (lambda w: fbank_steps(w, window=torch.hann_window(400, periodic=False) ** 0.85), "povey"),
        (lambda w: fbank_steps(w, preemph=0.0), "no pre-emphasis"),
        (lambda w: fbank_steps(w, dc=False), "no DC removal"),
        (lambda w: fbank_steps(w, exponent=1), "magnitude"),
        (lambda w: fbank_steps(w, log=torch.log10), "natural log"),
        (lambda w: fbank_steps(w, floor=False), "floor the mel energies"),
        (lambda w: fbank_steps(w, log=lambda m: torch.log(m.clamp(min=1e-10)), floor=False),
         "a floor of 1e-10 on the mel energies; Kaldi's fbank floors them at float32 eps"),
        (lambda w: fbank_steps(w).T, "time first"),
        (lambda w: fbank_steps(w).double(), "dtype"),
        (lambda w: fbank_steps(w)[:-1], "shape"),
        (lambda w: fbank_steps(w) + 0.01, "wrong values"),
        (lambda w: fbank_steps(w[0]), "raised"),
    ],
    ids=["periodic-hann", "povey", "no-preemphasis", "no-dc",
         "magnitude", "log10", "no-floor", "floor-1e-10", "transposed", "float64", "one-frame-short",
         "offset", "1d-input"],  # fmt: skip
)
def test_fbank_wrong(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        ch01.check_fbank(wrong)


def test_fbank_dc_then_preemphasis_order_is_named():
    def swapped(w):
        n = 1 + (w.shape[-1] - 400) // 160
        x = w[0][160 * torch.arange(n)[:, None] + torch.arange(400)]
        x = x - 0.97 * torch.cat([x[:, :1], x[:, :-1]], dim=1)
        x = (x - x.mean(dim=1, keepdim=True)) * torch.hann_window(400, periodic=False)
        power = torch.fft.rfft(torch.nn.functional.pad(x, (0, 112))).abs() ** 2
        return torch.log(torch.clamp(power[:, :256] @ MEL_BANKS.T, min=EPS))

    with pytest.raises(ExerciseError, match="before the DC removal"):
        ch01.check_fbank(swapped)


def _pad_front(x, t):
    return torch.nn.functional.pad(x, (0, 0, max(0, t - x.shape[0]), 0))[-t:]


def _pad_with_mean(x, t):
    out = audio.pad_or_cut(x, t).clone()
    out[x.shape[0] :] = x.mean()
    return out


def _pad_in_place(x, t):
    x.add_(1.0)
    return audio.pad_or_cut(x - 1.0, t)


def _keep_last(x, t):
    return x[-t:] if x.shape[0] >= t else audio.pad_or_cut(x, t)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (_pad_front, "padded at the start"),
        (_pad_with_mean, "not zeros"),
        (_keep_last, "kept the last 8 frames"),
        (lambda x, t: audio.pad_or_cut(x, t)[:-1], r"has shape \(7, 4\), expected \(8, 4\)"),
        (lambda x, t: audio.pad_or_cut(x, t).double(), "dtype"),
        (lambda x, t: audio.pad_or_cut(x, t).numpy(), "should be a torch.Tensor"),
        (_pad_in_place, "changed its input"),
        (lambda x, t: audio.pad_or_cut(x, t) if x.shape[0] > 1 else x, "one frame|shape"),
    ],
    ids=["pad-front", "pad-mean", "keep-last", "short", "float64", "numpy", "in-place",
         "one-frame"],  # fmt: skip
)
def test_pad_or_cut_wrong(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        ch01.check_pad_or_cut(wrong)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda x, m, s: (x - m) / s, "divides by 2 \\* std"),
        (lambda x, m, s: (x + m) / (2 * s), "subtracted, not added"),
        (lambda x, m, s: x - m / (2 * s), "subtract the mean first"),
        (lambda x, m, s: (x - m) / (2 * s) + 0.01, "wrong values"),
        (lambda x, m, s: x.sub_(m).div_(2 * s), "changed its input"),
        (lambda x, m, s: (x - m) / (2 * s) * (x != 0), "wrong values"),  # padding left at 0
    ],
    ids=["std", "plus-mean", "order", "offset", "in-place", "padding-kept-zero"],
)
def test_normalize_wrong(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        ch01.check_normalize(wrong)


def _masker(width_of, start_of, value=0.0):
    def fn(fbank, max_width, generator=None):
        frames = fbank.shape[0]
        width = min(width_of(max_width, generator), frames)
        start = start_of(frames, width, max_width, generator)
        out = fbank.clone()
        out[start : start + width] = value
        return out

    return fn


def _uniform_width(m, g):
    return int(torch.randint(m, (1,), generator=g))


def _uniform_start(frames, width, m, g):
    return int(torch.randint(frames - width + 1, (1,), generator=g))


def _two_spans(fbank, max_width, generator=None):
    out = time_mask(fbank, max_width, generator)
    if fbank.shape[0] > 4 and max_width > 1:
        out[-1] = 0
        out[0] = 0
    return out


def _global_rng(fbank, max_width, generator=None):
    return time_mask(fbank, max_width)


def _in_place(fbank, max_width, generator=None):
    fbank[0] = 0
    return fbank


def _bins_not_frames(fbank, max_width, generator=None):
    return time_mask(fbank.T, max_width, generator).T if fbank.shape[1] > 1 else fbank.clone()


@pytest.mark.parametrize(
    "wrong, message",
    [
        (_global_rng, "same seed"),
        (_masker(lambda m, g: m - 1, _uniform_start), "hardly varies|mean width"),
        (_masker(lambda m, g: m // 2, _uniform_start), "hardly varies"),
        (_masker(lambda m, g: int(torch.randint(1, m + 1, (1,), generator=g)), _uniform_start),
         "max_width - 1"),
        (_masker(_uniform_width,
                 lambda t, w, m, g: int(torch.randint(max(1, t - m), (1,), generator=g))),
         "last frame is never masked"),
        (_masker(_uniform_width, lambda t, w, m, g: int(torch.randint(1, max(2, t - w + 1), (1,),
                                                                       generator=g))),
         "first frame is never masked|max_width"),
        (_masker(_uniform_width, _uniform_start, value=-1.0), "setting them to 0"),
        (_two_spans, "ONE span"),
        (_in_place, "changed its input"),
        (_bins_not_frames, "ONE span|setting them to 0|max_width"),
        (lambda x, m, generator=None: time_mask(x, m, generator).double(), "dtype"),
        (lambda x, m, generator=None: time_mask(x, m, generator).numpy(), "torch.Tensor"),
        (lambda x, m: x.clone(), "unexpected keyword argument 'generator'"),
    ],
    ids=["global-rng", "always-max", "fixed-width", "width-from-1", "start-too-early",
         "never-at-0", "mask-value", "two-spans", "in-place", "masks-bins", "float64", "numpy",
         "no-generator"],  # fmt: skip
)
def test_time_mask_wrong(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        ch01.check_time_mask(wrong)
