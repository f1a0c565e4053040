"""Benchmarks: how fast the library runs, measured against per-clip-loop baselines.

Not a chapter: the measurements behind the README's Performance section.
``python -m ssast_teach.bench`` prints one JSON line per measurement, each with its
configuration, the machine's load average and the thread count:

- ``ceiling``: fp32 and bf16 matmul FLOP/s of large square matmuls, this machine's roof;
- ``masks``: clips/s of :func:`~ssast_teach.masking.cluster_mask` and
  :func:`~ssast_teach.masking.frame_mask` against a per-clip Python loop (the official
  ``gen_maskid_patch`` of ``src/models/ast_models.py``, one clip at a time);
- ``step``: one pretraining step (forward, backward, Adam), the official joint objective
  with two passes and two masks, for ``tiny`` 16x16 on 128x1024 (batch 8) and the classroom
  ``mini``. The library's step (:class:`~ssast_teach.pretrain.PretrainObjective`) runs
  against :func:`baseline_objective`, a per-clip-loop step written the way the official
  ``src/models/ast_models.py`` works (``gen_maskid_patch``, ``mpc``, ``mpg``), on a copy of
  the same weights; the two losses are compared on the same masks (``max_abs_diff``). Achieved FLOP/s use :func:`step_flops` (formula in the JSON);
- ``finetune``: clips/s of the fine-tuning forward (no gradient);
- ``frontend``: clips/s of :class:`~ssast_teach.datasets.FbankDataset` without a cache, and
  the first and second epoch with one.

Every step and forward line carries the peak memory: CUDA ``max_memory_allocated``; CPU the
process's peak resident set (``VmHWM``, reset before each measurement through
``/proc/self/clear_refs``; where that is not allowed, ``ru_maxrss``, which never goes down).
Times are wall-clock medians after a warm-up, with the minimum and the process CPU time next
to them: on a shared machine the minimum and the CPU time are the steadier numbers, and the
baseline and library steps are timed in turn (interleaved) so that load changes hit both.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor

from ssast_teach import code_version
from ssast_teach.audio import FrontEndConfig
from ssast_teach.datasets import DataSplit, FbankDataset, pretraining_mix
from ssast_teach.masking import cluster_mask, cluster_mask_reference, frame_mask
from ssast_teach.model import SSASTModel, attention_for
from ssast_teach.patches import encoder_flops, to_image
from ssast_teach.pretrain import PretrainConfig, PretrainObjective
from ssast_teach.training import autocast, resolve_precision

__all__ = [
    "BENCHES",
    "baseline_objective",
    "bench_ceiling",
    "bench_finetune",
    "bench_frontend",
    "bench_masks",
    "bench_step",
    "main",
    "physical_cores",
    "reference_masks",
    "step_flops",
    "timed",
    "timed_interleaved",
]

BENCHES = ("ceiling", "masks", "step", "finetune", "frontend")
STEP_CONFIGS = ("tiny", "classroom")
Emit = Callable[[dict], None]


# ---------------------------------------------------------------- measuring


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads counted once)."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return len(allowed) if allowed else os.cpu_count() or 1
    cores, cpu, package = set(), None, "0"
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "processor":
            cpu = int(value)
        elif key == "physical id":
            package = value
        elif key == "core id" and (allowed is None or cpu in allowed):
            cores.add((package, value))
    return len(cores) or (len(allowed) if allowed else os.cpu_count() or 1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_interleaved(
    fns: dict[str, Callable[[], object]], device: torch.device, repeat: int, warmup: int = 1
) -> dict[str, dict]:
    """Seconds per call of each function, run in turn within every repeat, so that a change
    of load on a shared machine hits all of them alike. ``warmup`` untimed calls each first."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    walls: dict[str, list[float]] = {name: [] for name in fns}
    cpus: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            cpu0, wall0 = time.process_time(), time.perf_counter()
            fn()
            _sync(device)
            walls[name].append(time.perf_counter() - wall0)
            cpus[name].append(time.process_time() - cpu0)
    return {
        name: {
            "s_median": statistics.median(walls[name]),
            "s_min": min(walls[name]),
            "cpu_s_median": statistics.median(cpus[name]),
            "cpu_s_min": min(cpus[name]),
            "s_all": [round(w, 5) for w in walls[name]],
        }
        for name in fns
    }


def timed(fn: Callable[[], object], device: torch.device, repeat: int, warmup: int = 1) -> dict:
    """Run ``fn`` ``warmup`` times, then ``repeat`` timed times: seconds per call."""
    return timed_interleaved({"fn": fn}, device, repeat, warmup)["fn"]


def _status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` memory field (``VmHWM``, ``VmRSS``) in KiB, None if unreadable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict]:
    """Fill a dict with the peak memory (MiB) reached inside the block, and how it was read."""
    out: dict = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        yield out
        out["peak_mem_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        out["peak_mem_kind"] = "cuda max_memory_allocated"
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak RSS (Linux >= 4.0)
        kind = "process peak RSS (VmHWM, reset before)"
    except OSError:
        kind = "process ru_maxrss (since start: never reset)"
    start_kib = _status_kib("VmRSS")
    if start_kib is not None:  # the process's own weight: Python, torch, models, data
        out["rss_at_start_mib"] = round(start_kib / 1024, 1)
    yield out
    peak_kib = _status_kib("VmHWM") if "VmHWM" in kind else None
    if peak_kib is None:
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out["peak_mem_mib"] = round(peak_kib / 1024, 1)
    out["peak_mem_kind"] = kind


# ---------------------------------------------------------------- the ceiling


def matmul_flops(dtype: torch.dtype, n: int, device: torch.device, repeat: int) -> dict:
    """FLOP/s of an ``n x n @ n x n`` matmul in ``dtype`` (``2 n^3`` FLOPs): ``"wall"`` from the
    fastest run, ``"cpu"`` from the least process CPU time of a run."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    t = timed(lambda: a @ b, device, repeat)
    return {"wall": 2 * n**3 / t["s_min"], "cpu": 2 * n**3 / t["cpu_s_min"]}


def bench_ceiling(emit: Emit, device: torch.device, quick: bool, repeat: int) -> dict[str, dict]:
    """Measure and emit the fp32 and bf16 matmul FLOP/s; return them by precision name."""
    n = 256 if quick else 2048
    ceilings = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        flops = matmul_flops(dtype, n, device, max(repeat, 5))
        ceilings[name] = flops
        emit({"bench": "ceiling", "config": {"matmul": f"{n}x{n} @ {n}x{n}", "dtype": name},
              "flops_per_s": round(flops["wall"]), "tflops": round(flops["wall"] / 1e12, 4),
              "flops_per_cpu_s": round(flops["cpu"]),
              "note": "fastest run (wall); least CPU time of a run (per CPU-second)"})
    return ceilings


# ---------------------------------------------------------------- masks


def reference_masks(
    batch: int, num_patches: int, mask_patch: int, t_dim: int, rng: random.Random, cluster: bool
) -> list[list[int]]:
    """Per-clip Python masks as the official ``gen_maskid_patch`` (cluster) or ``random.sample``
    (frame) draw them: one clip at a time."""
    if cluster:
        return [cluster_mask_reference(num_patches, mask_patch, t_dim, rng) for _ in range(batch)]
    return [rng.sample(range(num_patches), mask_patch) for _ in range(batch)]


def bench_masks(emit: Emit, quick: bool, repeat: int) -> None:
    """Clips/s of the batched masks against the per-clip loop, B=64, N=512 (8x64), M=400."""
    batch, n, m, t_dim = (8 if quick else 64), 512, 400, 64
    gen, rng = torch.Generator().manual_seed(0), random.Random(0)
    cpu = torch.device("cpu")
    for kind, fast in (("cluster", cluster_mask), ("frame", frame_mask)):
        cluster = kind == "cluster"
        t_fast = timed(lambda: fast(batch, n, m, t_dim, gen), cpu, repeat * 5)  # noqa: B023
        t_loop = timed(
            lambda: torch.tensor(reference_masks(batch, n, m, t_dim, rng, cluster)),  # noqa: B023
            cpu, repeat * 5,
        )
        fast_rate, loop_rate = batch / t_fast["s_median"], batch / t_loop["s_median"]
        emit({"bench": "masks", "config": {"kind": kind, "B": batch, "N": n, "M": m,
                                           "t_dim": t_dim},
              "clips_per_s": round(fast_rate), "baseline_clips_per_s": round(loop_rate),
              "speedup": round(fast_rate / loop_rate, 2),
              "speedup_min_times": round(t_loop["s_min"] / t_fast["s_min"], 2),
              "baseline": "per clip: masking.cluster_mask_reference" if cluster
              else "per clip: random.sample(range(N), M)"})


# ---------------------------------------------------------------- the per-clip baseline step


def _baseline_pass(model: SSASTModel, x: Tensor, mask_ids: Sequence[Sequence[int]]):
    """One official-style pass: ``(masked outputs per clip, target patches per clip)``.

    Per clip, as the official loop: a dense ``(B, N, D)`` keep-mask blended with
    ``mask_embed``, targets gathered clip by clip from ``nn.Unfold``.
    """
    grid, c = model.grid, model.cls_token_num
    image = to_image(x)  # (B, 1, F, T)
    unfold = torch.nn.Unfold((grid.fshape, grid.tshape), stride=(grid.fstride, grid.tstride))
    patches = unfold(image).transpose(1, 2)  # (B, N, P)
    tokens = model.v.patch_embed(image)  # (B, N, D)
    keep = torch.ones_like(tokens)  # (B, N, D)
    targets = []
    for i, ids in enumerate(mask_ids):
        ids = torch.as_tensor(ids, device=x.device)
        keep[i, ids, :] = 0
        targets.append(patches[i, ids].detach())  # (M, P)
    tokens = tokens * keep + (1 - keep) * model.mask_embed.expand_as(tokens)  # (B, N, D)
    h = model._encode(tokens)  # (B, C + N, D)
    outputs = [h[i, torch.as_tensor(ids, device=x.device) + c] for i, ids in enumerate(mask_ids)]
    return outputs, targets  # B x (M, D), B x (M, P)


def baseline_objective(
    model: SSASTModel, x: Tensor, mask_a: Sequence[Sequence[int]], mask_b: Sequence[Sequence[int]]
) -> dict[str, Tensor]:
    """The joint objective the official way: two passes, heads and InfoNCE clip by clip.

    ``mask_a`` feeds mpc, ``mask_b`` mpg (lists of ids per clip). Returns ``{"loss", "acc",
    "nce", "mse"}`` with ``loss = nce + 10 * mse``. Give it a model whose ``attention`` is
    ``"explicit"`` to also run attention as timm 0.4.5 did.
    """
    outputs, targets = _baseline_pass(model, x, mask_a)
    nce, correct, count = 0.0, 0, 0
    for h, target in zip(outputs, targets, strict=True):
        scores = target @ model.cpredlayer(h).T  # (M, M): x_i . c_j
        nce = nce + torch.log_softmax(scores, dim=-1).diagonal().sum()
        winners = torch.softmax(scores, dim=-1).argmax(dim=0)  # (M,)
        correct += int((winners == torch.arange(len(h), device=x.device)).sum())
        count += len(h)
    nce = -nce / count
    outputs, targets = _baseline_pass(model, x, mask_b)
    preds = torch.stack([model.gpredlayer(h) for h in outputs])  # (B, M, P)
    mse = torch.mean((preds - torch.stack(targets)) ** 2)
    acc = torch.tensor(correct / count)
    return {"loss": nce + 10 * mse, "acc": acc, "nce": nce, "mse": mse}


# ---------------------------------------------------------------- the pretraining step


def _step_config(name: str, quick: bool) -> PretrainConfig:
    if name == "tiny":
        overrides = dict(size="tiny", input_tdim=1024, mask_patch=400, batch_size=8)
        if quick:
            overrides.update(size="mini", input_tdim=64, mask_patch=24, eval_mask_patch=None,
                             batch_size=2)
        return PretrainConfig(**overrides)
    if name == "classroom":
        overrides = dict(input_tdim=64, mask_patch=24, batch_size=2) if quick else {}
        return PretrainConfig.preset("classroom", **overrides)
    raise ValueError(f"step config {name!r} is not one of {', '.join(STEP_CONFIGS)}")


def step_flops(model: SSASTModel, mask_patch: int, batch: int) -> tuple[int, str]:
    """Model FLOPs of one official joint step and the formula that gives them."""
    spec, grid = model.config.spec, model.grid
    d, p, m = spec.embed_dim, grid.patch_dim, mask_patch
    enc = encoder_flops(grid, d, spec.depth, spec.cls_token_num)
    head = 2 * m * (d * d + d * p)  # Linear(D, D) + Linear(D, P) on the M masked outputs
    scores = 2 * m * m * p  # InfoNCE x @ c^T per clip
    flops = 3 * batch * (2 * enc + 2 * head + scores)
    formula = (
        "3 (fwd+bwd = 3x fwd) * B * (2 passes * encoder_flops(grid, D, depth, C) "
        "+ 2 heads * 2*M*(D^2 + D*P) + InfoNCE 2*M^2*P); encoder_flops = 2 * MACs of the patch "
        "embedding and blocks (patches.encoder_flops)"
    )
    return flops, formula


def _fresh_optimizer(model: SSASTModel, config: PretrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.Adam(params, config.base_lr, betas=config.betas,
                            weight_decay=config.weight_decay)


def bench_step(
    emit: Emit, name: str, device: torch.device, precisions: Sequence[str], quick: bool,
    repeat: int, ceilings: dict[str, dict], compile_model: bool = False,
) -> None:
    """Time the library's joint step (each precision) and the fp32 per-clip baseline."""
    config = _step_config(name, quick)
    torch.manual_seed(0)
    model = SSASTModel.for_pretraining(
        config.size, config.fshape, config.tshape, config.input_fdim, config.input_tdim
    ).to(device)
    baseline = copy.deepcopy(model)
    baseline.attention = "explicit"  # timm 0.4.5, the official code's attention
    grid, b, m = model.grid, config.batch_size, config.mask_patch
    n, t_dim = grid.num_patches, grid.t_dim
    x = torch.randn(b, config.input_tdim, config.input_fdim, device=device)
    flops, formula = step_flops(model, m, b)
    described = {
        "name": name, "size": config.size, "patch": f"{config.fshape}x{config.tshape}",
        "input": f"{config.input_fdim}x{config.input_tdim}", "N": n, "M": m, "B": b,
        "cluster": config.use_cluster, "objective": "pretrain_joint, two passes, two masks",
        "optimizer": "Adam(betas=(0.95, 0.999), weight_decay=5e-7)",
    }

    # Same weights, same masks, fp32: the fast objective must give the baseline's numbers.
    rng = random.Random(1)
    lists_a = reference_masks(b, n, m, t_dim, rng, config.use_cluster)
    lists_b = reference_masks(b, n, m, t_dim, rng, config.use_cluster)
    ids_a, ids_b = torch.tensor(lists_a, device=device), torch.tensor(lists_b, device=device)
    objective = PretrainObjective(model, config)
    with torch.no_grad():
        ours = objective(x, ids_a, ids_b)
        theirs = baseline_objective(baseline, x, lists_a, lists_b)
        # The attention kernels differ (fused vs explicit): the encoder outputs are not
        # bit-equal, so an equal loss is not a trivial one.
        h_diff = (model.masked_outputs(x, ids_a)[0] - baseline.masked_outputs(x, ids_a)[0])
        low = {p: _loss_in(objective, x, ids_a, ids_b, p, device) for p in precisions}
    diffs = {k: abs(float(ours[k]) - float(theirs[k])) for k in ("loss", "nce", "mse", "acc")}

    base_opt = _fresh_optimizer(baseline, config)

    def baseline_step() -> None:
        a = reference_masks(b, n, m, t_dim, rng, config.use_cluster)
        bb = reference_masks(b, n, m, t_dim, rng, config.use_cluster)
        loss = baseline_objective(baseline, x, a, bb)["loss"]
        base_opt.zero_grad(set_to_none=True)
        loss.backward()
        base_opt.step()

    gen = torch.Generator().manual_seed(2)
    draw = cluster_mask if config.use_cluster else frame_mask

    def fast_step(precision: str, runner: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
        a = draw(b, n, m, t_dim, gen, device=device)
        bb = draw(b, n, m, t_dim, gen, device=device)
        with autocast(precision, device):
            loss = runner(x, a, bb)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    steps = {"baseline": baseline_step}
    kernels = {}
    for precision in precisions:
        # One model per precision, its attention kernel set once as the trainers set it.
        copy_ = copy.deepcopy(model)
        copy_.attention = kernels[precision] = attention_for(device, precision)
        runner = PretrainObjective(copy_, config)
        runner = torch.compile(runner) if compile_model else runner
        opt = _fresh_optimizer(copy_, config)
        steps[precision] = lambda p=precision, r=runner, o=opt: fast_step(p, r, o)
    times = timed_interleaved(steps, device, repeat, warmup=2 if compile_model else 1)
    memory = {}
    for name, step in steps.items():
        with peak_memory(device) as memory[name]:
            step()

    t_base = times["baseline"]
    emit({"bench": "step", "impl": "baseline", "precision": "fp32", "config": described,
          "baseline": "per-clip loops: reference Python masks, dense (B,N,D) mask blend, heads "
          "and InfoNCE clip by clip, explicit attention (timm 0.4.5)",
          **_step_numbers(t_base, flops, formula, ceilings, b), **memory["baseline"]})
    for precision in precisions:
        t = times[precision]
        emit({"bench": "step", "impl": "library" + ("+compile" if compile_model else ""),
              "precision": precision, "config": described,
              "attention": _KERNELS[kernels[precision]],
              **_step_numbers(t, flops, formula, ceilings, b), **memory[precision],
              "speedup_vs_baseline_fp32": round(t_base["s_median"] / t["s_median"], 3),
              "speedup_vs_baseline_fp32_min": round(t_base["s_min"] / t["s_min"], 3),
              "speedup_vs_baseline_fp32_cpu": round(t_base["cpu_s_median"] / t["cpu_s_median"],
                                                    3),
              "timing": "baseline and library steps interleaved, warm-up first",
              "max_abs_diff": max(diffs.values()), "abs_diff": diffs,
              "masked_outputs_max_abs_diff": float(h_diff.abs().max()),
              "diff_note": "fp32 library objective vs baseline, same weights and masks",
              f"loss_{precision}_minus_fp32": float(low[precision] - ours["loss"])})


def _loss_in(objective: PretrainObjective, x: Tensor, mask_a: Tensor, mask_b: Tensor,
                 precision: str, device: torch.device) -> Tensor:
    """The joint loss of ``objective`` computed in ``precision`` (autocast for bf16)."""
    with autocast(precision, device):
        return objective(x, mask_a, mask_b)["loss"].float()


_KERNELS = {"fused": "fused (scaled_dot_product_attention)",
            "explicit": "explicit (q k^T, softmax, @ v)"}


def _step_numbers(t: dict, flops: int, formula: str, ceilings: dict, batch: int) -> dict:
    achieved = flops / t["s_median"]
    out = {"step_s_median": round(t["s_median"], 4), "step_s_min": round(t["s_min"], 4),
           "step_cpu_s_median": round(t["cpu_s_median"], 4), "step_s_all": t["s_all"],
           "clips_per_s": round(batch / t["s_median"], 2), "flops_per_step": flops,
           "flops_formula": formula, "achieved_flops_per_s": round(achieved)}
    out.update(_fractions(flops, t, ceilings))
    return out


def _fractions(flops: int, t: dict, ceilings: dict[str, dict]) -> dict[str, float]:
    """Achieved / matmul FLOP/s: median wall, fastest wall, and per CPU-second (steadiest on a
    shared machine; with several threads it also counts time spent waiting at barriers)."""
    out = {}
    for name, ceiling in ceilings.items():
        out[f"fraction_of_{name}_matmul"] = round(flops / t["s_median"] / ceiling["wall"], 3)
        out[f"fraction_of_{name}_matmul_at_min"] = round(flops / t["s_min"] / ceiling["wall"], 3)
        out[f"fraction_of_{name}_matmul_cpu"] = round(
            flops / t["cpu_s_median"] / ceiling["cpu"], 3
        )
    return out


# ---------------------------------------------------------------- fine-tuning forward


def bench_finetune(emit: Emit, device: torch.device, precisions: Sequence[str], quick: bool,
                   repeat: int, ceilings: dict[str, dict]) -> None:
    """Clips/s of the fine-tuning forward: tiny on ESC-50 inputs (512 frames, stride 10) and
    the classroom mini on ESC-10 (512 frames, stride 16)."""
    setups = {
        "tiny_esc50": dict(size="tiny", pretrain_tdim=1024, input_tdim=512, fstride=10,
                           tstride=10, batch=8),
        "classroom_esc10": dict(size="mini", pretrain_tdim=256, input_tdim=512, fstride=16,
                                tstride=16, batch=16),
    }
    for name, s in setups.items():
        batch, tdim = (2, 64) if quick else (s["batch"], s["input_tdim"])
        torch.manual_seed(0)
        pre = SSASTModel.for_pretraining(s["size"], input_tdim=64 if quick else s["pretrain_tdim"])
        model = SSASTModel.for_finetuning(
            pre.state_dict(), n_classes=10, fstride=s["fstride"], tstride=s["tstride"], input_tdim=tdim
        ).to(device).eval()
        spec, grid = model.config.spec, model.grid
        flops = batch * encoder_flops(grid, spec.embed_dim, spec.depth, spec.cls_token_num)
        x = torch.randn(batch, tdim, 128, device=device)
        for precision in precisions:
            model.attention = attention_for(device, precision)  # as the trainers set it

            def forward(precision=precision, model=model, x=x) -> None:
                with torch.no_grad(), autocast(precision, device):
                    model(x)

            with peak_memory(device) as mem:
                t = timed(forward, device, repeat * 2)
            achieved = flops / t["s_median"]
            emit({"bench": "finetune", "precision": precision,
                  "config": {"name": name, "size": s["size"], "input": f"128x{tdim}",
                             "stride": f"{s['fstride']}x{s['tstride']}", "N": grid.num_patches,
                             "B": batch, "pooling": "avgtok"},
                  "clips_per_s": round(batch / t["s_median"], 2),
                  "forward_s_median": round(t["s_median"], 4), "forward_s_min": round(t["s_min"], 4),
                  "flops_per_forward": flops, "flops_formula": "B * encoder_flops (head: <0.1%)",
                  "achieved_flops_per_s": round(achieved), **_fractions(flops, t, ceilings),
                  **mem})


# ---------------------------------------------------------------- front end


def bench_frontend(emit: Emit, quick: bool, repeat: int) -> None:
    """Clips/s of the pretraining front end over the course mix, without and with a cache."""
    mix = pretraining_mix("audio+speech", seed=0)
    # Every k-th clip: a sample with both ESC-10 (5 s, 44.1 kHz ogg) and speech clips.
    clips = 6 if quick else 48
    items = mix.items[:: max(1, len(mix) // clips)][:clips]
    split = DataSplit("bench", items, mix.labels)
    front = FrontEndConfig(target_length=1024)

    def epoch(ds: FbankDataset) -> None:
        for i in range(len(ds)):
            ds[i]

    cpu = torch.device("cpu")
    plain = timed(lambda: epoch(FbankDataset(split, front)), cpu, repeat=max(1, repeat // 2),
                  warmup=0)
    with tempfile.TemporaryDirectory() as tmp:
        cached = FbankDataset(split, front, cache=True, cache_dir=tmp)
        first = timed(lambda: epoch(cached), cpu, repeat=1, warmup=0)
        second = timed(lambda: epoch(cached), cpu, repeat=max(3, repeat), warmup=0)
        from_disk = timed(lambda: epoch(FbankDataset(split, front, cache=True, cache_dir=tmp)),
                          cpu, repeat=max(1, repeat // 2), warmup=0)
    rate = {k: len(items) / t["s_median"] for k, t in
            (("plain", plain), ("first", first), ("second", second), ("disk", from_disk))}
    emit({"bench": "frontend", "config": {"clips": len(items), "source": "pretraining_mix "
                                          "(ESC-10 folds 1-5 + FSDD + Speech Commands mini)",
                                          "target_length": 1024, "training": False},
          "no_cache_clips_per_s": round(rate["plain"], 1),
          "cache_first_epoch_clips_per_s": round(rate["first"], 1),
          "cache_second_epoch_clips_per_s": round(rate["second"], 1),
          "disk_cache_new_dataset_clips_per_s": round(rate["disk"], 1),
          "second_vs_first_epoch": round(rate["second"] / rate["first"], 2)})


# ---------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ssast_teach.bench",
        description="Measure the library: one JSON line per measurement on stdout.",
    )
    p.add_argument("--only", default=",".join(BENCHES),
                   help=f"comma-separated subset of {','.join(BENCHES)}; step and finetune "
                   "also measure the ceiling they are compared with [default: all]")
    p.add_argument("--steps", default=",".join(STEP_CONFIGS),
                   help=f"step configs to run: {','.join(STEP_CONFIGS)} [default: both]")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: a smoke test")
    p.add_argument("--device", choices=["cpu", "cuda"], help="[default: CUDA when present]")
    p.add_argument("--precision", default=None,
                   help="fp32, bf16 or both, comma-separated [default: fp32,bf16 where bf16 is "
                   "native (CUDA bf16, CPU AVX512-BF16 or AMX), else fp32]")
    p.add_argument("--threads", type=int, help="torch threads [default: physical cores]")
    p.add_argument("--repeat", type=int, help="timed repeats after warm-up [default: 5; "
                   "quick 1]")
    p.add_argument("--compile", action="store_true",
                   help="run the library step under torch.compile (inductor; the first steps "
                   "compile for minutes; measured: ~9%% faster on CPU, so not the default)")
    p.add_argument("--out", help="also append the JSON lines to this file")
    return p


def _precisions(arg: str | None, device: torch.device) -> list[str]:
    if arg is None:
        # bf16 is measured where the trainers' auto precision would pick it (native bf16)
        return ["fp32", "bf16"] if resolve_precision("auto", device) == "bf16" else ["fp32"]
    chosen = [p.strip() for p in arg.split(",") if p.strip()]
    bad = [p for p in chosen if p not in ("fp32", "bf16")]
    if bad or not chosen:
        raise ValueError(f"--precision takes fp32, bf16 or both (comma-separated), got {arg!r}")
    return chosen


def _subset(arg: str, choices: Sequence[str], flag: str) -> list[str]:
    chosen = [c.strip() for c in arg.split(",") if c.strip()]
    bad = [c for c in chosen if c not in choices]
    if bad or not chosen:
        raise ValueError(f"{flag} takes a comma-separated subset of {','.join(choices)}, got {arg!r}")
    return chosen


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        only = _subset(args.only, BENCHES, "--only")
        steps = _subset(args.steps, STEP_CONFIGS, "--steps")
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available")
        precisions = _precisions(args.precision, device)
        if args.threads is not None and args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        if args.repeat is not None and args.repeat < 1:
            raise ValueError(f"--repeat must be >= 1, got {args.repeat}")
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    torch.set_num_threads(args.threads or physical_cores())
    repeat = args.repeat or (1 if args.quick else 5)
    env = {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
           "ssast_teach": code_version(), "quick": args.quick}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)

    def emit(row: dict) -> None:
        line = json.dumps({**row, **env, "loadavg_1m": round(os.getloadavg()[0], 2)})
        print(line, flush=True)
        if args.out:
            with open(args.out, "a", encoding="utf-8") as f:
                f.write(line + "\n")

    ceilings: dict[str, dict] = {}
    if "ceiling" in only or "step" in only or "finetune" in only:
        ceilings = bench_ceiling(emit, device, args.quick, repeat)
    if "masks" in only:
        bench_masks(emit, args.quick, repeat)
    if "step" in only:
        for name in steps:
            bench_step(emit, name, device, precisions, args.quick, repeat, ceilings,
                       compile_model=args.compile)
    if "finetune" in only:
        bench_finetune(emit, device, precisions, args.quick, repeat, ceilings)
    if "frontend" in only:
        bench_frontend(emit, args.quick, repeat)


if __name__ == "__main__":
    sys.exit(main())
