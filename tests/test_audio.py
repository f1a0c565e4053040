"""The chapter 01 front end against the official dataloader's behaviour (``_wav2fbank`` and
``__getitem__`` in the official ``src/dataloader.py``)."""

import math

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from conftest import DATA, needs
from ssast_teach.audio import (
    NORM_STATS,
    AudioLoadError,
    FrontEnd,
    FrontEndConfig,
    add_noise,
    as_float_waveform,
    compute_norm_stats,
    fbank,
    load_audio,
    mixup_waveforms,
    normalize,
    pad_or_cut,
    sample_mixup_lambda,
    spec_augment,
    to_mono,
)

SC_CLIP = DATA / "speech_commands_mini" / "bed" / "62581901_nohash_0.wav"
FSDD_CLIP = DATA / "fsdd" / "recordings" / "7_jackson_32.wav"
ESC_CLIP = DATA / "esc10" / "001 - Dog bark" / "1-100032-A.ogg"


def _need(path):
    needs(path.is_file(), f"course clip {path.name}", "the repository's data/ folder ships it")


def _spec_fbank(waveform, sr=16000):
    """The official ``_wav2fbank`` fbank call written out by hand."""
    return torchaudio.compliance.kaldi.fbank(
        waveform - waveform.mean(),
        htk_compat=True,
        sample_frequency=sr,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=128,
        dither=0.0,
        frame_shift=10,
    )


def _tone(seconds=1.0, sr=16000, hz=440.0):
    t = torch.arange(int(seconds * sr)) / sr
    return (0.3 * torch.sin(2 * math.pi * hz * t) + 0.05).unsqueeze(0)  # (1, S), non-zero mean


# --- fbank --------------------------------------------------------------------------------------


def test_fbank_matches_spec_call_on_real_and_synthetic_audio():
    _need(SC_CLIP)
    for w in (load_audio(SC_CLIP), _tone()):
        ours = fbank(w)
        assert ours.shape[1] == 128
        torch.testing.assert_close(ours, _spec_fbank(w), atol=1e-6, rtol=0)
    torch.testing.assert_close(fbank(_tone()[0]), fbank(_tone()))  # (S,) accepted too


def test_ten_seconds_give_998_frames():
    assert fbank(torch.randn(1, 160000) * 0.1).shape == (998, 128)


def test_fbank_rejects_multichannel():
    with pytest.raises(ValueError, match="mono"):
        fbank(torch.randn(2, 16000))


def test_pad_or_cut_and_pad_value_after_normalisation():
    raw = fbank(_tone(0.5))  # (48, 128)
    assert pad_or_cut(raw, 30).shape == (30, 128)
    torch.testing.assert_close(pad_or_cut(raw, 30), raw[:30])
    padded = pad_or_cut(raw, 128)
    assert padded.shape == (128, 128) and torch.equal(padded[:48], raw)
    for name, (mean, std) in NORM_STATS.items():
        x = normalize(padded, name)
        assert torch.allclose(x[48:], torch.full((80, 128), (0 - mean) / (2 * std)))
    torch.testing.assert_close(normalize(padded, (1.0, 2.0)), (padded - 1.0) / 4.0)
    with pytest.raises(ValueError, match="unknown norm stats"):
        normalize(padded, "librispeech")


def test_compute_norm_stats_is_the_mean_and_std_of_all_values(tmp_path):
    clips = [fbank(_tone(s, hz=hz)) for s, hz in [(0.3, 300.0), (0.7, 900.0), (1.2, 2000.0)]]
    mean, std = compute_norm_stats(clips)
    everything = torch.cat(clips).double()
    assert mean == pytest.approx(float(everything.mean()), abs=1e-9)
    assert std == pytest.approx(float(everything.std()), abs=1e-9)
    padded = torch.cat([pad_or_cut(c, 100) for c in clips]).double()
    assert compute_norm_stats(clips, target_length=100)[0] == pytest.approx(float(padded.mean()))
    path = tmp_path / "tone.wav"
    sf.write(path, _tone(0.7, hz=900.0)[0].numpy(), 16000, subtype="FLOAT")
    assert compute_norm_stats([path])[0] == pytest.approx(float(clips[1].mean()), abs=1e-4)


# --- loading ------------------------------------------------------------------------------------


def test_resampling_8k_and_44k_files():
    _need(FSDD_CLIP)
    _need(ESC_CLIP)
    n8k = sf.info(FSDD_CLIP).frames
    w = load_audio(FSDD_CLIP)
    assert w.shape == (1, 2 * n8k) and w.dtype == torch.float32
    n44k = len(sf.read(ESC_CLIP)[0])
    w = load_audio(ESC_CLIP)
    assert w.shape == (1, math.ceil(n44k * 16000 / 44100))
    assert w.abs().max() <= 1.0 + 1e-3
    assert load_audio(FSDD_CLIP, sample_rate=8000).shape == (1, n8k)


def test_stereo_is_averaged_to_mono(tmp_path):
    left, right = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 8000)).astype(np.float32)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    w = load_audio(path)
    assert w.shape == (1, 8000)
    torch.testing.assert_close(w[0], torch.from_numpy((left + right) / 2))


def test_int16_and_float32_files_give_the_same_waveform(tmp_path):
    x = _tone(0.5)[0].numpy()
    sf.write(tmp_path / "a.wav", x, 16000, subtype="PCM_16")
    sf.write(tmp_path / "b.wav", x, 16000, subtype="FLOAT")
    a, b = load_audio(tmp_path / "a.wav"), load_audio(tmp_path / "b.wav")
    assert a.dtype == b.dtype == torch.float32
    torch.testing.assert_close(a, b, atol=1 / 32768, rtol=0)


def _bad_inputs(tmp_path):
    """{file name: how it was made}; every one must raise AudioLoadError naming the file."""
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF" + bytes(range(256)) * 3)
    (tmp_path / "empty.wav").write_bytes(b"")
    sf.write(tmp_path / "zero_samples.wav", np.zeros((0, 1), np.float32), 16000)
    (tmp_path / "notes.wav").write_text("this is a text file, not audio\n" * 20)
    nan = np.full(1600, 0.1, np.float32)
    nan[5] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    inf = np.full(1600, 0.1, np.float32)
    inf[7] = np.inf
    sf.write(tmp_path / "inf.wav", inf, 16000, subtype="FLOAT")
    sf.write(tmp_path / "too_short.wav", np.zeros(399, np.float32), 16000)
    sf.write(tmp_path / "too_short_8k.wav", np.zeros(150, np.float32), 8000)
    return {
        "corrupt.wav": "not a readable audio file",
        "empty.wav": "empty",
        "zero_samples.wav": "no samples",
        "notes.wav": "not a readable audio file",
        "nan.wav": "NaN",
        "inf.wav": "infinite",
        "too_short.wav": "too short",
        "too_short_8k.wav": "too short",
    }


def test_bad_inputs_raise_audio_load_error_naming_the_file(tmp_path):
    for name, problem in _bad_inputs(tmp_path).items():
        with pytest.raises(AudioLoadError) as info:
            load_audio(tmp_path / name)
        assert name in str(info.value) and problem in str(info.value), str(info.value)
        err = info.value
        assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        load_audio(tmp_path / "missing.wav")
    sf.write(tmp_path / "one_frame.wav", np.full(400, 0.1, np.float32), 16000)
    assert load_audio(tmp_path / "one_frame.wav").shape == (1, 400)  # one frame is enough


# --- augmentation -------------------------------------------------------------------------------


def test_spec_augment_masks_one_band_each_and_is_seeded():
    x = torch.ones(300, 128)
    assert torch.equal(spec_augment(x, 0, 0), x)
    state = torch.get_rng_state()
    a = spec_augment(x, 48, 96, torch.Generator().manual_seed(3))
    assert torch.equal(torch.get_rng_state(), state)  # a generator leaves the global RNG alone
    assert torch.equal(a, spec_augment(x, 48, 96, torch.Generator().manual_seed(3)))
    assert a.shape == x.shape
    for seed in range(20):
        y = spec_augment(x, 24, 0, torch.Generator().manual_seed(seed))
        zero_bins = (y == 0).all(dim=0).nonzero().flatten()
        assert len(zero_bins) < 24 and (y != 0).any(dim=0).sum() == 128 - len(zero_bins)
        if len(zero_bins):
            assert zero_bins.max() - zero_bins.min() + 1 == len(zero_bins)  # one contiguous band
        z = spec_augment(x, 0, 96, torch.Generator().manual_seed(seed))
        zero_frames = (z == 0).all(dim=1).sum()
        assert zero_frames < 96 and (z == 0).sum() == zero_frames * 128


def test_mixup_waveforms_as_official():
    w1 = torch.rand(1, 1000) + 0.5
    short, long = torch.rand(1, 600) - 0.2, torch.rand(1, 1500) + 0.1
    for w2 in (short, long):
        m = mixup_waveforms(w1, w2, 0.7)
        assert m.shape == (1, 1000)
        assert abs(float(m.mean())) < 1e-6
        w2c = w2 - w2.mean()
        w2c = torch.nn.functional.pad(w2c, (0, max(0, 1000 - w2c.shape[1])))[:, :1000]
        expected = 0.7 * (w1 - w1.mean()) + 0.3 * w2c
        torch.testing.assert_close(m, expected - expected.mean())
    torch.testing.assert_close(mixup_waveforms(w1, short, 1.0), w1 - w1.mean())


def test_mixup_lambda_is_beta_10_10_and_seeded():
    g = torch.Generator().manual_seed(0)
    lams = np.array([sample_mixup_lambda(g) for _ in range(2000)])
    assert ((lams > 0) & (lams < 1)).all()
    assert lams.mean() == pytest.approx(0.5, abs=0.01)
    assert lams.std() == pytest.approx(math.sqrt(100 / (400 * 21)), abs=0.01)  # Beta(10,10)
    assert sample_mixup_lambda(torch.Generator().manual_seed(5)) == sample_mixup_lambda(
        torch.Generator().manual_seed(5)
    )


def test_noise_adds_at_most_a_tenth_then_rolls_in_minus_ten_to_nine():
    T = 64
    x = (torch.arange(T, dtype=torch.float32) * 10).unsqueeze(1).repeat(1, 128)  # row t == 10 t
    shifts = set()
    for seed in range(300):
        y = add_noise(x, torch.Generator().manual_seed(seed))
        assert y.shape == x.shape
        shift = int(-torch.round(y[0, 0] / 10)) % T
        shift = shift - T if shift >= T // 2 else shift
        shifts.add(shift)
        diff = y - torch.roll(x, shift, dims=0)
        assert (diff >= 0).all() and (diff < 0.1).all()
    assert shifts == set(range(-10, 10))
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert torch.equal(add_noise(x, g1), add_noise(x, g2))


# --- composition --------------------------------------------------------------------------------


def test_presets_are_the_official_recipes():
    esc = FrontEndConfig.for_dataset("esc50")
    assert (esc.target_length, esc.freqm, esc.timem, esc.mixup, esc.noise, esc.norm_stats) == (
        512,
        24,
        96,
        0.0,
        True,
        "esc50",
    )
    sc = FrontEndConfig.for_dataset("speechcommands")
    assert (sc.target_length, sc.freqm, sc.timem, sc.mixup, sc.noise, sc.norm_stats) == (
        128,
        48,
        48,
        0.6,
        True,
        "speechcommands",
    )
    a = FrontEndConfig.for_dataset("audioset")
    assert (a.target_length, a.freqm, a.timem, a.mixup, a.noise, a.norm_stats) == (
        1024,
        48,
        192,
        0.5,
        False,
        "audioset",
    )
    assert FrontEndConfig.for_dataset("pretrain") == FrontEndConfig()
    assert FrontEndConfig.for_dataset("esc50", target_length=256).target_length == 256
    with pytest.raises(ValueError, match="no front-end preset"):
        FrontEndConfig.for_dataset("librispeech")


def test_frontend_composes_in_the_official_order():
    _need(SC_CLIP)
    _need(FSDD_CLIP)
    cfg = FrontEndConfig.for_dataset("speechcommands")
    fe = FrontEnd(cfg)

    def by_hand(w, training, g=None):
        x = pad_or_cut(fbank(w), cfg.target_length)
        if training:
            x = spec_augment(x, cfg.freqm, cfg.timem, g)
        x = normalize(x, "speechcommands")
        return add_noise(x, g) if training else x

    w = load_audio(SC_CLIP)
    assert torch.equal(fe(SC_CLIP), by_hand(w, False))
    out = fe(SC_CLIP, training=True, generator=torch.Generator().manual_seed(1))
    assert out.shape == (128, 128)
    assert torch.equal(out, by_hand(w, True, torch.Generator().manual_seed(1)))
    raw, sr = sf.read(FSDD_CLIP, dtype="float32")
    assert torch.equal(fe(torch.from_numpy(raw), sample_rate=sr), fe(FSDD_CLIP))
    with pytest.raises(ValueError, match="sample_rate"):
        fe(torch.from_numpy(raw))

    mixed, lam = fe.mixup(SC_CLIP, FSDD_CLIP, training=False, lam=0.3)
    expected = mixup_waveforms(w, load_audio(FSDD_CLIP), 0.3)
    assert lam == 0.3 and torch.equal(mixed, by_hand(expected, False))
    _, lam = fe.mixup(SC_CLIP, FSDD_CLIP, generator=torch.Generator().manual_seed(2))
    assert 0 < lam < 1


# --- integer PCM waveforms ----------------------------------------------------------------------

ESC_CLIP_2 = DATA / "esc10" / "002 - Rain" / "3-157487-A.ogg"
PCM_CLIPS = [SC_CLIP, FSDD_CLIP, ESC_CLIP, ESC_CLIP_2]  # 16 kHz, 8 kHz WAV; 44.1 kHz Vorbis


def _eight_bit(x):
    """Float samples quantised the 8-bit way: uint8 (128 = silence) and int8, same steps."""
    q = np.clip(np.round(x.astype(np.float64) * 128), -128, 127)
    return (q + 128).astype(np.uint8), q.astype(np.int8)


@pytest.mark.parametrize("clip", PCM_CLIPS, ids=lambda p: p.suffix + ":" + p.parent.name)
def test_integer_pcm_gives_the_float_fbank(clip):
    """int16/int32 as soundfile reads them equal its float reading (the same /2**15, /2**31
    scaling); without the scaling the fbank would sit ~2 ln 32768 = 20.8 log units high."""
    _need(clip)
    fe = FrontEnd()
    x, sr = sf.read(clip, dtype="float32")
    ref = fe.raw_fbank(x, sample_rate=sr)  # (T, 128) from the float path
    loud = ref > ref.max() - 5  # bins well above any quantisation noise
    for dtype in ("int16", "int32"):
        pcm, _ = sf.read(clip, dtype=dtype)
        for source in (pcm, torch.from_numpy(pcm)):  # numpy and torch, same scaling
            got = fe.raw_fbank(source, sample_rate=sr)
            if clip.suffix == ".wav":  # integer samples: the float reading is exactly pcm / 2**15
                torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
            elif dtype == "int32":  # Vorbis decodes to float: int32 keeps 31 bits of it
                torch.testing.assert_close(got, ref, atol=1e-3, rtol=0)
            else:  # Vorbis to int16 rounds to 16 bits: only near-silent bins move visibly
                assert float((got - ref).abs().mean()) < 1e-3
                torch.testing.assert_close(got[loud], ref[loud], atol=1e-2, rtol=0)
    u8, i8 = _eight_bit(x)
    got = fe.raw_fbank(u8, sample_rate=sr)
    # the WAV 8-bit convention exactly: (x - 128) / 128, and int8 / 128 on the same steps
    same = torch.from_numpy((u8.astype(np.float32) - 128) / 128)
    torch.testing.assert_close(got, fe.raw_fbank(same, sample_rate=sr), atol=1e-5, rtol=0)
    torch.testing.assert_close(fe.raw_fbank(torch.from_numpy(i8), sample_rate=sr), got,
                               atol=1e-5, rtol=0)
    # 8 bits are coarse: quiet bins move by a few log units, the loud ones barely
    assert float((got - ref).abs().mean()) < 1.0
    torch.testing.assert_close(got[ref > ref.max() - 2], ref[ref > ref.max() - 2], atol=0.25,
                               rtol=0)


def test_every_waveform_entry_point_scales_int16():
    _need(SC_CLIP)
    _need(FSDD_CLIP)
    pcm, sr = sf.read(SC_CLIP, dtype="int16")  # 16 kHz: fbank takes it directly
    x, _ = sf.read(SC_CLIP, dtype="float32")
    w = torch.from_numpy(x).unsqueeze(0)  # (1, S)
    torch.testing.assert_close(fbank(pcm), fbank(w), atol=1e-5, rtol=0)
    torch.testing.assert_close(fbank(torch.from_numpy(pcm).unsqueeze(0)), fbank(w), atol=1e-5,
                               rtol=0)
    assert torch.equal(to_mono(pcm, sr), w)
    fe = FrontEnd(FrontEndConfig.for_dataset("speechcommands"))
    assert torch.equal(fe(pcm, sample_rate=sr), fe(SC_CLIP))
    other, sr2 = sf.read(FSDD_CLIP, dtype="int16")
    mixed, _ = fe.mixup(pcm, other, sample_rate=sr, training=False, lam=0.3)
    wanted, _ = fe.mixup(SC_CLIP, torch.from_numpy(other / 32768), sample_rate=sr,
                         training=False, lam=0.3)
    torch.testing.assert_close(mixed, wanted, atol=1e-5, rtol=0)
    short = torch.from_numpy(other[:1000])
    torch.testing.assert_close(mixup_waveforms(torch.from_numpy(pcm), short, 0.4),
                               mixup_waveforms(w[0], short.float() / 32768, 0.4))


def test_pcm_scaling_by_dtype():
    full = {"int16": [-32768, 0, 16384], "int32": [-(2**31), 0, 2**30], "int8": [-128, 0, 64],
            "uint8": [0, 128, 192]}
    for dtype, samples in full.items():
        got = as_float_waveform(np.array(samples, dtype=dtype))
        assert got.dtype == torch.float32 and got.tolist() == [-1.0, 0.0, 0.5], dtype
    assert torch.equal(as_float_waveform(torch.tensor([255], dtype=torch.uint8)),
                       torch.tensor([127 / 128]))
    f64 = torch.tensor([0.25, -0.5], dtype=torch.float64)
    assert as_float_waveform(f64) is f64  # float is left alone, dtype too
    assert as_float_waveform(np.array([0.25], np.float32)).dtype == torch.float32
    big_endian = np.array([16384, -32768], dtype=">i2")
    assert as_float_waveform(big_endian).tolist() == [0.5, -1.0]


REFUSED = [np.zeros(800, bool), np.zeros(800, np.int64), np.zeros(800, np.complex64),
           np.zeros(800, np.uint16), torch.zeros(800, dtype=torch.int64),
           torch.zeros(800, dtype=torch.bool), torch.zeros(800, dtype=torch.complex64)]


@pytest.mark.parametrize("bad", REFUSED, ids=lambda a: str(a.dtype))
def test_other_dtypes_are_refused_naming_argument_and_dtype(bad):
    dtype = str(bad.dtype).removeprefix("torch.")  # bool, int64, complex64, uint16
    expected = "float samples in \\[-1, 1\\] or integer PCM \\(int16, int32, uint8, int8\\)"
    calls = {
        "waveform": lambda: fbank(bad),
        "source": lambda: FrontEnd()(bad, sample_rate=16000),
        "source2": lambda: FrontEnd().mixup(torch.zeros(800), bad, sample_rate=16000),
        "w2": lambda: mixup_waveforms(torch.zeros(800), bad, 0.5),
        "clip.wav": lambda: to_mono(bad, 16000, name="clip.wav"),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=expected) as info:
            call()
        message = str(info.value)
        assert message.startswith(f"{name}: dtype {dtype} "), message
