"""Chapter 08/09: the checkers accept right answers and explain wrong ones; the ablation
module's statistics, findings and a micro grid run."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import needs
from ssast_teach import ablations
from ssast_teach.ablations import (
    RUNS,
    SCALES,
    difference_in_se,
    factor_agreement,
    findings,
    kendall_tau,
    readme_averages,
)
from ssast_teach.checkpoints import make_official_like, published_results
from ssast_teach.exercises import ExerciseError, ch08, ch09
from ssast_teach.model import MODEL_SIZES, SSASTModel, official_strides

# graded behaviour: a stub's check raises (tests/test_exercises_common.py covers the other)
pytestmark = pytest.mark.usefixtures("grading")

# ------------------------------------------------------------------ right answers pass


def model_ok(sd):
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    d, _, fshape, tshape = sd["v.patch_embed.proj.weight"].shape
    depth = len({k.split(".")[2] for k in sd if k.startswith("v.blocks.")})
    cls_tokens = 2 if "v.dist_token" in sd else 1
    size = next(n for n, s in MODEL_SIZES.items() if (s.embed_dim, s.depth, s.cls_token_num) == (d, depth, cls_tokens))
    model = SSASTModel.for_pretraining(size, fshape, tshape, int(sd["p_input_fdim"]), int(sd["p_input_tdim"]))
    model.load_state_dict(sd, strict=True)
    return model


def fitting(sd, input_tdim, input_fdim=128, *, cls_rows=False, max_stride=None, conv=None):
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    _, _, fshape, tshape = sd["v.patch_embed.proj.weight"].shape
    n = sd["v.pos_embed"].shape[1] - (0 if cls_rows else 2 if "v.dist_token" in sd else 1)
    conv = conv or (lambda size, patch, stride: (size - patch) // stride + 1)
    return [(fs, ts) for fs in range(1, (max_stride or fshape) + 1) for ts in range(1, (max_stride or tshape) + 1)
            if conv(input_fdim, fshape, fs) * conv(input_tdim, tshape, ts) == n]


def counts_ok(sd):
    counts = dict.fromkeys(("total", "encoder", "heads", "unused", "other"), 0)
    for key, tensor in sd.items():
        key = key.removeprefix("module.")
        if key.startswith(("v.head.", "v.head_dist.")):
            part = "unused"
        elif key.startswith(("cpredlayer.", "gpredlayer.", "mlp_head.")):
            part = "heads"
        elif key.startswith("v."):
            part = "encoder"
        else:
            part = "other"
        counts[part] += tensor.numel()
        counts["total"] += tensor.numel()
    return counts


def interval_ok(a, b, n_resamples=2000, seed=0, *, unpaired=False, flat=False, quantiles=(0.025, 0.975)):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    if flat:  # seeds x clips taken as independent clips
        per_clip = (a - b.mean(axis=0)).reshape(-1)
    else:
        per_clip = a.mean(axis=0) - b.mean(axis=0)
    n = per_clip.size
    if unpaired:
        ma = a.mean(axis=0)[rng.integers(0, n, (n_resamples, n))].mean(axis=1)
        mb = b.mean(axis=0)[rng.integers(0, n, (n_resamples, n))].mean(axis=1)
        means = ma - mb
    else:
        means = per_clip[rng.integers(0, n, (n_resamples, n))].mean(axis=1)
    low, high = np.quantile(means, quantiles)
    return float(per_clip.mean()), float(low), float(high)


@pytest.mark.parametrize("hidden", [False, True])
def test_right_answers_pass(hidden, capsys):
    ch08.check_model_from_official(model_ok, hidden=hidden)
    ch08.check_strides_that_fit(fitting, hidden=hidden)
    ch08.check_count_parameters(counts_ok, hidden=hidden)
    ch09.check_readme_averages(readme_averages, hidden=hidden)
    ch09.check_kendall_tau(kendall_tau, hidden=hidden)
    ch09.check_paired_interval(interval_ok, hidden=hidden)
    ch09.check_difference_in_se(difference_in_se, hidden=hidden)
    lines = capsys.readouterr().out.splitlines()
    expected = [f"✓ ch08 exercise {k}:" for k in (1, 2, 3)] + [f"✓ ch09 exercise {k}:" for k in (1, 2, 3, 4)]
    assert [line.split(":")[0] + ":" for line in lines] == expected


def test_a_passing_check_returns_the_function_or_nothing(monkeypatch, capsys):
    monkeypatch.delenv("SSAST_TEACH_GRADING")
    assert ch08.check_model_from_official(model_ok) is model_ok
    assert ch09.check_readme_averages(readme_averages) is readme_averages
    assert ch09.check_kendall_tau(kendall_tau) is kendall_tau
    assert ch08.check_strides_that_fit(fitting) is None  # extensions: nothing later uses them
    assert ch09.check_paired_interval(interval_ok) is None


def test_the_interval_passes_whatever_its_random_draws(capsys):
    for seed in (1, 2, 3):
        ch09.check_paired_interval(lambda a, b, n_resamples=2000, s=seed: interval_ok(a, b, n_resamples, s),
                                   hidden=True)


def test_tiny_counts_are_the_official_ones():
    counts = counts_ok(make_official_like("tiny"))
    assert counts["total"] == 6_046_290  # the official tiny pretraining state dict
    assert counts["unused"] == 2 * (192 * 1000 + 1000)  # v.head and v.head_dist
    assert sum(v for k, v in counts.items() if k != "total") == counts["total"]


# ------------------------------------------------------------------ stubs


def not_implemented(*args, **kwargs):
    raise NotImplementedError


CHECKS = [ch08.check_model_from_official, ch08.check_strides_that_fit, ch08.check_count_parameters,
          ch09.check_readme_averages, ch09.check_kendall_tau, ch09.check_paired_interval,
          ch09.check_difference_in_se]


@pytest.mark.parametrize("check", CHECKS)
def test_not_implemented_is_named(check):
    with pytest.raises(ExerciseError, match="not implemented yet"):
        check(not_implemented)


@pytest.mark.parametrize("check", CHECKS)
def test_a_stub_outside_grading_reports_and_goes_on(check, monkeypatch, capsys):
    monkeypatch.delenv("SSAST_TEACH_GRADING")
    returned = check(not_implemented)
    assert "not implemented yet" in capsys.readouterr().out
    if check in (ch08.check_model_from_official, ch09.check_readme_averages, ch09.check_kendall_tau):
        assert returned is not None and returned is not not_implemented  # the library's version
    else:
        assert returned is None


# ------------------------------------------------------------------ hidden cases follow the grader's seed


@pytest.mark.parametrize("cases", [ch08._official_cases, ch08._stride_cases, ch08._count_cases,
                                   ch09._average_cases, ch09._tau_cases, ch09._paired_cases,
                                   ch09._se_cases])
def test_hidden_cases_change_with_the_grader_seed(cases, monkeypatch):
    def drawn(seed):
        monkeypatch.setenv("SSAST_TEACH_GRADER_SEED", str(seed))
        out = []
        for case in cases(True):
            parts = [case[0]]
            for x in case[1:]:
                if isinstance(x, np.ndarray):
                    x = x.tolist()
                elif isinstance(x, dict) and all(isinstance(v, torch.Tensor) for v in x.values()):
                    x = sum(float(v.double().sum()) for v in x.values())  # the weights drawn
                parts.append(x)
            out.append(repr(parts))
        return out

    first, again, other = drawn(1), drawn(1), drawn(2)
    assert first == again
    assert first != other
    monkeypatch.delenv("SSAST_TEACH_GRADER_SEED")
    visible = [c[0] for c in cases(False)]
    assert visible == [c[0] for c in cases(False)]


# ------------------------------------------------------------------ wrong answers explained


def test_model_mistakes_are_named():
    def keeps_prefix(sd):
        _, _, fshape, tshape = sd["v.patch_embed.proj.weight"].shape  # KeyError on module. keys
        return SSASTModel.for_pretraining("tiny", fshape, tshape)

    with pytest.raises(ExerciseError, match="strip it first"):
        ch08.check_model_from_official(keeps_prefix)

    def assumes_1024(sd):
        plain = {k.removeprefix("module."): v for k, v in sd.items()}
        return model_ok(plain | {"p_input_tdim": torch.tensor(1024)})

    with pytest.raises(ExerciseError, match="not every checkpoint was pretrained on 1024"):
        ch08.check_model_from_official(assumes_1024)

    def not_loaded(sd):
        plain = {k.removeprefix("module."): v for k, v in sd.items()}
        c = model_ok(plain).config
        model = SSASTModel.for_pretraining(c.size, c.fshape, c.tshape, c.input_fdim, c.input_tdim)
        model.load_state_dict(sd, strict=False)  # the module. keys match nothing: random weights stay
        return model

    with pytest.raises(ExerciseError, match="not the checkpoint's tensors"):
        ch08.check_model_from_official(not_loaded)

    with pytest.raises(ExerciseError, match="should return an ssast_teach.model.SSASTModel"):
        ch08.check_model_from_official(lambda sd: {k.removeprefix("module."): v for k, v in sd.items()})


def test_stride_mistakes_are_named():
    with pytest.raises(ExerciseError, match="class-token rows"):
        ch08.check_strides_that_fit(lambda sd, t, f=128: fitting(sd, t, f, cls_rows=True))
    with pytest.raises(ExerciseError, match="missing"):
        ch08.check_strides_that_fit(lambda sd, t, f=128: fitting(sd, t, f)[1:])

    def only_the_official_stride(sd, input_tdim, input_fdim=128):
        weight = {k.removeprefix("module."): v for k, v in sd.items()}["v.patch_embed.proj.weight"]
        return [official_strides(*weight.shape[2:])]

    with pytest.raises(ExerciseError, match="one frequency row"):
        ch08.check_strides_that_fit(only_the_official_stride)
    with pytest.raises(ExerciseError, match="a conv gives"):
        ch08.check_strides_that_fit(lambda sd, t, f=128: fitting(sd, t, f) + [(1, 1)])
    with pytest.raises(ExerciseError, match="skips input"):
        ch08.check_strides_that_fit(lambda sd, t, f=128: fitting(sd, t, f, max_stride=200))
    with pytest.raises(ExerciseError, match="plain ints"):
        ch08.check_strides_that_fit(lambda sd, t, f=128: [torch.tensor(p) for p in fitting(sd, t, f)])
    with pytest.raises(ExerciseError, match="listed twice"):
        ch08.check_strides_that_fit(lambda sd, t, f=128: fitting(sd, t, f) * 2)


def test_two_class_tokens_taken_for_granted_fail_on_base_nokd():
    def always_two(sd, input_tdim, input_fdim=128):
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
        _, _, fshape, tshape = sd["v.patch_embed.proj.weight"].shape
        n = sd["v.pos_embed"].shape[1] - 2  # right for every distilled model, not for base_nokd
        return [(fs, ts) for fs in range(1, fshape + 1) for ts in range(1, tshape + 1)
                if ((input_fdim - fshape) // fs + 1) * ((input_tdim - tshape) // ts + 1) == n]

    with pytest.raises(ExerciseError, match="base_nokd.*ONE class token|ONE class token.*base_nokd"):
        ch08.check_strides_that_fit(always_two)


def test_count_mistakes_are_named():
    def heads_in_encoder(sd):
        out = counts_ok(sd)
        return out | {"encoder": out["encoder"] + out["unused"]}

    with pytest.raises(ExerciseError, match="ImageNet heads"):
        ch08.check_count_parameters(heads_in_encoder)

    def tensor_values(sd):
        return {k: torch.tensor(v) for k, v in counts_ok(sd).items()}

    with pytest.raises(ExerciseError, match="plain int"):
        ch08.check_count_parameters(tensor_values)
    with pytest.raises(ExerciseError, match="no key"):
        ch08.check_count_parameters(lambda sd: {"total": 1})


def tau_a(x, y):
    n = len(x)
    s = sum(((x[i] > x[j]) - (x[i] < x[j])) * ((y[i] > y[j]) - (y[i] < y[j]))
            for i in range(n) for j in range(i + 1, n))
    return s / (n * (n - 1) / 2)


def test_ch09_mistakes_are_named():
    with pytest.raises(ExerciseError, match="tau-a"):
        ch09.check_kendall_tau(tau_a)
    with pytest.raises(ExerciseError, match="sign is flipped"):
        ch09.check_kendall_tau(lambda x, y: -kendall_tau(x, y))
    with pytest.raises(ExerciseError, match="tau-b is undefined"):
        ch09.check_kendall_tau(lambda x, y: 0.0 if math.isnan(kendall_tau(x, y)) else kendall_tau(x, y))

    def zeros_for_missing(row):
        def mean(tasks):
            return sum(float(row[t] or 0) for t in tasks) / len(tasks)
        return mean(["as20k_map", "esc50_acc"]), mean(["ks2_acc", "ks1_acc", "sid_acc", "er_acc"])

    with pytest.raises(ExerciseError, match="missing number is not 0"):
        ch09.check_readme_averages(zeros_for_missing)

    def added_se(a, na, b, nb):
        return (a - b) / (math.sqrt(a * (1 - a) / na) + math.sqrt(b * (1 - b) / nb))

    with pytest.raises(ExerciseError, match="variances do"):
        ch09.check_difference_in_se(added_se)
    with pytest.raises(ExerciseError, match="should return a float"):
        ch09.check_difference_in_se(lambda *a: "1.0")


def test_interval_mistakes_are_named():
    with pytest.raises(ExerciseError, match="throws the pairing away"):
        ch09.check_paired_interval(lambda a, b, **k: interval_ok(a, b, unpaired=True, **k))
    with pytest.raises(ExerciseError, match="average each clip over its seeds first"):
        ch09.check_paired_interval(lambda a, b, **k: interval_ok(a, b, flat=True, **k))
    with pytest.raises(ExerciseError, match="90 % one"):
        ch09.check_paired_interval(lambda a, b, **k: interval_ok(a, b, quantiles=(0.05, 0.95), **k))

    def b_minus_a(a, b, **k):
        return interval_ok(b, a, **k)

    with pytest.raises(ExerciseError, match="sign is flipped"):
        ch09.check_paired_interval(b_minus_a)

    def in_points(a, b, **k):
        return tuple(100 * v for v in interval_ok(a, b, **k))

    with pytest.raises(ExerciseError, match="in points"):
        ch09.check_paired_interval(in_points)
    with pytest.raises(ExerciseError, match=r"should return \(diff, low, high\)"):
        ch09.check_paired_interval(lambda a, b, **k: interval_ok(a, b, **k)[1:])

    def never_zero(a, b, **k):  # a fixed-width interval: wrong against itself
        diff, _, _ = interval_ok(a, b, **k)
        return diff, diff + 0.001, diff + 0.05

    with pytest.raises(ExerciseError, match="does not contain the difference"):
        ch09.check_paired_interval(never_zero)


def normal_interval(a, b, n_resamples=2000):
    """diff +- 1.96 standard errors of the seed-averaged per-clip differences: close to the
    bootstrap when the differences spread symmetrically, not when they are skewed and bounded."""
    per_clip = np.asarray(a, float).mean(axis=0) - np.asarray(b, float).mean(axis=0)
    diff, se = per_clip.mean(), per_clip.std(ddof=1) / math.sqrt(per_clip.size)
    return float(diff), float(diff - 1.96 * se), float(diff + 1.96 * se)


@pytest.mark.parametrize("hidden", [False, True])
def test_a_normal_approximation_is_not_the_paired_bootstrap(hidden):
    with pytest.raises(ExerciseError, match="normal approximation"):
        ch09.check_paired_interval(normal_interval, hidden=hidden)


# ------------------------------------------------------------------ the ablation module


def test_kendall_tau_values():
    assert kendall_tau([1, 2, 3], [3, 4, 5]) == 1.0
    assert kendall_tau([1, 2, 3], [5, 4, 3]) == -1.0
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    # tau-b with a tie in x: C=5, D=0, T_x=1, T_y=0 -> 5 / sqrt(6 * 5)
    assert kendall_tau([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / math.sqrt(30))
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="same length"):
        kendall_tau([1, 2], [1, 2, 3])


def test_kendall_tau_matches_scipy():
    try:
        from scipy import stats
    except ImportError:
        stats = None
    needs(stats is not None, "SciPy", 'install the test extra: pip install -e ".[test]"')
    gen = torch.Generator().manual_seed(0)
    for n in (3, 6, 10):
        x, y = torch.randint(0, 4, (2, n), generator=gen).double().tolist()
        if len(set(x)) > 1 and len(set(y)) > 1:
            assert kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic)


def test_readme_averages_reproduce_the_readme():
    checked = 0
    for row in published_results():
        audio, speech = readme_averages(row)
        if audio is not None and row["avg_audio"]:
            assert abs(audio - float(row["avg_audio"])) < 0.051  # the README rounds to 0.1
            assert abs(speech - float(row["avg_speech"])) < 0.051
            checked += 1
    assert checked == 4  # the base models publish every task
    assert readme_averages({"as20k_map": "1", "esc50_acc": "", **dict.fromkeys(
        ("ks2_acc", "ks1_acc", "sid_acc", "er_acc"), "2")}) == (None, 2.0)


def test_difference_in_se():
    assert difference_in_se(0.8, 80, 0.7, 80) == pytest.approx(0.1 / math.sqrt(0.16 / 80 + 0.21 / 80))
    assert difference_in_se(0.5, 10, 0.5, 10) == 0.0


def test_mask_patch_keeps_the_paper_ratio():
    s = SCALES["classroom"]
    masked = [s.mask_patch(RUNS[n], 128) for n in ("mask100", "mask250", "joint", "scratch")]
    assert masked == [25, 62, 100, None]


def fake_results(accs: dict[str, tuple[float, float]], n=(400, 2000)) -> dict:
    """Runs whose probes get the first ``acc * n`` test clips right (3 identical seeds)."""
    runs = []
    for name, (esc, fs) in accs.items():
        probe = {}
        for t, a, k in (("esc10", esc, n[0]), ("fsdd_speakers", fs, n[1])):
            correct = [[int(i < round(a * k)) for i in range(k)]] * 3
            probe[t] = {"acc": a, "n_test": k, "se": math.sqrt(a * (1 - a) / k),
                        "correct": correct}
        runs.append({"name": name, "mask_patch": None, "probe": probe})
    return {"provenance": {}, "runs": runs}


def test_findings_on_a_paper_like_result():
    paper_like = fake_results({
        "joint": (0.9, 0.8), "mask100": (0.8, 0.78), "mask250": (0.85, 0.8),
        "discriminative": (0.85, 0.75), "generative": (0.6, 0.6), "audio_only": (0.85, 0.7),
        "audio_small": (0.8, 0.7), "speech_only": (0.7, 0.75), "frame": (0.85, 0.9), "scratch": (0.4, 0.5),
        "frame_scratch": (0.5, 0.6),
    })
    found = findings(paper_like)
    assert [f.verdict for f in found] == ["held beyond noise"] * 5
    assert all(c["low"] > 0 for f in found for c in f.comparisons)
    agreement = {(r["factor"], r["task"]): r for r in factor_agreement(paper_like)}
    assert agreement[("objective", "esc10")]["tau"] == 1.0
    assert agreement[("patch vs frame", "fsdd_speakers")]["same_order"]

    reversed_masks = fake_results({"joint": (0.8, 0.8), "mask100": (0.9, 0.8), "mask250": (0.85, 0.8)})
    found = findings(reversed_masks)
    assert found[1].verdict == "reversed beyond noise"
    assert found[0].verdict == "not tested"  # scratch absent
    close = fake_results({"joint": (0.801, 0.8), "mask100": (0.8, 0.8), "mask250": (0.8, 0.8)})
    assert findings(close)[1].verdict == "inconclusive"  # a positive sign alone is not held
    assert {(r["factor"], r["task"]): r["tau"]
            for r in factor_agreement(reversed_masks)}[("masked patches", "esc10")] == -1.0


def test_load_results_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no ablation results"):
        ablations.load_results(tmp_path / "absent.json")
    (tmp_path / "other.json").write_text(json.dumps({"x": 1}))
    with pytest.raises(ValueError, match="not an ablation results file"):
        ablations.load_results(tmp_path / "other.json")


def test_probe_checkpoints_without_files_downloads_nothing(tmp_path):
    out = ablations.probe_checkpoints(cache_dir=tmp_path)
    assert set(out) == set(ablations.OFFICIAL_PROBED)
    assert {"SSAST-Base-Patch-400", "SSAST-Base-Frame-400", *ablations.ABLATION_CHECKPOINTS} == set(out)
    assert all(v is None for v in out.values())


def test_micro_grid_and_command_line(tmp_path, capsys):
    micro = replace(SCALES["ci"], name="ci", input_tdim=32, steps=1, batch_size=2, val_clips=2)
    threads = torch.get_num_threads()
    results = ablations.run_grid(micro, work_dir=tmp_path, runs=["frame", "scratch"],
                                 seeds=(0, 1))
    assert torch.get_num_threads() == threads  # pinned to 1 for the grid only
    assert results["provenance"]["torch_threads"] == 1
    assert [r["name"] for r in results["runs"]] == ["frame", "scratch"]
    frame = results["runs"][0]
    assert frame["mask_patch"] == 12 and frame["pretrain_steps"] == 1  # 400/512 of 16 patches
    assert set(frame["probe"]) == {"esc10", "fsdd_speakers"}
    esc = frame["probe"]["esc10"]
    assert 0 <= esc["acc"] <= 1 and len(esc["correct"]) == 2 and len(esc["correct"][0]) == 400
    assert esc["acc"] == pytest.approx(sum(esc["acc_per_seed"]) / 2)
    assert {"command", "seeds", "versions", "date", "seconds"} <= set(results["provenance"])
    out = tmp_path / "results.json"
    assert ablations.main(["--scale", "ci", "--runs", "scratch", "--out", str(out),
                           "--work-dir", str(tmp_path), "--seeds", "0"]) == 0
    saved = ablations.load_results(out)
    assert saved["provenance"]["command"].startswith("python -m ssast_teach.ablations --scale ci")
    assert "finding 1 not tested" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown runs"):
        ablations.run_grid("ci", work_dir=tmp_path, runs=["nope"])


def test_probe_checkpoints_on_a_stand_in_file(tmp_path):
    # a random official-format tiny file under an ablation model's name stands in for the real one
    torch.save(make_official_like("tiny", seed=0), tmp_path / "audio_model_dis.pth")
    out = ablations.probe_checkpoints(("audio_model_dis", "audio_model_gen"), cache_dir=tmp_path)
    assert out["audio_model_gen"] is None
    assert set(out["audio_model_dis"]) == {"esc10", "fsdd_speakers"}
    assert out["audio_model_dis"]["esc10"]["n_test"] == 400
    assert (tmp_path / "audio_model_dis.pth.json").is_file()  # recorded at its first use


@pytest.mark.slow
def test_official_comparison_end_to_end_on_base_size_files(tmp_path, monkeypatch, capsys):
    """The command that probes the official checkpoints, on official-format base-size files built
    from the manifests (random weights); one small task keeps it to seconds per checkpoint."""
    for name, geometry in (("SSAST-Base-Patch-400", "patch"), ("SSAST-Base-Frame-400", "frame")):
        torch.save(make_official_like("base", geometry, seed=1), tmp_path / f"{name}.pth")
    monkeypatch.setattr(ablations, "PROBE_TASKS", {"speech_commands_mini": "speech"})
    out = tmp_path / "official.json"
    assert ablations.main(["--official", "--cache-dir", str(tmp_path), "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert set(saved["probes"]) == {"SSAST-Base-Patch-400", "SSAST-Base-Frame-400"}
    rows = saved["against_baseline"]
    assert len(rows) == 2 and all(r["verdict"] in ablations.VERDICTS for r in rows)
    assert saved["probes"]["SSAST-Base-Patch-400"]["speech_commands_mini"]["n_test"] == 51
    assert "SSAST-Base-Frame-400" in capsys.readouterr().out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert ablations.main(["--official", "--cache-dir", str(empty), "--out", str(out)]) == 1
