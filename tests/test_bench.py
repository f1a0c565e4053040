"""Smoke tests of the benchmark CLI at tiny sizes: the JSON it prints, never its timings."""

import json
import random

import pytest
import torch

from ssast_teach import bench
from ssast_teach.masking import cluster_mask_reference
from ssast_teach.model import SSASTModel
from ssast_teach.pretrain import PretrainConfig, PretrainObjective


@pytest.fixture(autouse=True)
def _keep_thread_count():
    threads = torch.get_num_threads()  # bench.main sets it for the whole process
    yield
    torch.set_num_threads(threads)


def run_bench(capsys, *argv: str) -> list[dict]:
    bench.main(["--quick", "--threads", "1", *argv])
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_masks_and_ceiling_lines(capsys):
    rows = run_bench(capsys, "--only", "ceiling,masks")
    assert [r["bench"] for r in rows] == ["ceiling", "ceiling", "masks", "masks"]
    assert {r["config"]["dtype"] for r in rows[:2]} == {"fp32", "bf16"}
    for r in rows[2:]:
        assert r["clips_per_s"] > 0 and r["baseline_clips_per_s"] > 0
        assert r["threads"] == 1 and r["quick"] is True and "loadavg_1m" in r


def test_step_line_has_flops_memory_and_equal_losses(capsys):
    rows = run_bench(capsys, "--only", "step", "--steps", "tiny", "--precision", "fp32")
    steps = [r for r in rows if r["bench"] == "step"]
    assert [r["impl"] for r in steps] == ["baseline", "library"]
    fast = steps[1]
    assert fast["max_abs_diff"] < 1e-5
    assert fast["attention"].startswith("fused")  # fp32 on a CPU: the fused kernel
    assert "encoder_flops" in fast["flops_formula"] and fast["flops_per_step"] > 0
    assert fast["peak_mem_mib"] > 0 and 0 < fast["fraction_of_fp32_matmul"]


def test_frontend_and_finetune_lines(capsys):
    rows = run_bench(capsys, "--only", "finetune,frontend", "--precision", "fp32")
    kinds = [r["bench"] for r in rows]
    assert kinds.count("finetune") == 2 and kinds[-1] == "frontend"
    front = rows[-1]
    assert front["cache_second_epoch_clips_per_s"] > 0 and front["second_vs_first_epoch"] > 0


@pytest.mark.parametrize(
    "argv", [["--only", "nope"], ["--precision", "fp16"], ["--threads", "0"], ["--steps", "x"]]
)
def test_bad_arguments_name_the_flag(argv):
    with pytest.raises(SystemExit, match=argv[0]):
        bench.main(argv)


def test_baseline_objective_equals_the_library_objective():
    config = PretrainConfig.preset("ci", batch_size=3)
    model = SSASTModel.for_pretraining("mini", input_tdim=64)
    rng = random.Random(0)
    a = [cluster_mask_reference(32, 24, 4, rng) for _ in range(3)]
    b = [cluster_mask_reference(32, 24, 4, rng) for _ in range(3)]
    x = torch.randn(3, 64, 128)
    ours = PretrainObjective(model, config)(x, torch.tensor(a), torch.tensor(b))
    model.attention = "explicit"
    theirs = bench.baseline_objective(model, x, a, b)
    for key in ("loss", "acc", "nce", "mse"):
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-5, atol=1e-5)
