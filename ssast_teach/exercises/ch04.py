"""Checkers for chapter 04 (the encoder): multi-head self-attention, the pre-norm block, a
padding mask, the pos-embed crop.

The attention and the block are compared with the library model's own timm modules (their
forward, and the explicit weights of :meth:`SSASTModel.attention_maps`); the padding mask is
checked by properties (zero weight on padding, rows that sum to one, agreement with attention
over the truncated keys); the crop with :func:`ssast_teach.model.adapt_pos_embed`. When a wrong
answer equals a known mistake (no scale, the model width's ``D**-0.5`` for ``head_dim**-0.5``,
q/k/v split in the wrong order, post-norm, the tanh GELU, ...), the message names that mistake.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssast_teach.exercises import (
    ExerciseError,
    Mistake,
    call_student,
    check_tensor,
    check_with_hints,
    checker,
    hidden_seed,
    passed,
)
from ssast_teach.model import SSASTModel, adapt_pos_embed

__all__ = [
    "check_block_forward",
    "check_center_crop",
    "check_padded_attention",
    "check_self_attention",
]

SIZES = ("mini", "tiny", "small")  # base is the same code at D=768, only slower to build

# ---------------------------------------------------------------------- the references


def _self_attention(h: Tensor, attn: nn.Module) -> tuple[Tensor, Tensor]:
    """Multi-head self-attention of ``h`` (B, L, D) with ``attn.qkv``, ``attn.proj`` and
    ``attn.num_heads``: ``(output (B, L, D), weights (B, heads, L, L))``."""
    b, length, d = h.shape
    heads = attn.num_heads
    qkv = attn.qkv(h).reshape(b, length, 3, heads, d // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, L, head_dim)
    weights = torch.softmax(q @ k.transpose(-2, -1) * (d // heads) ** -0.5, dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(b, length, d)  # (B, L, D)
    return attn.proj(out), weights


def _block_forward(x: Tensor, blk: nn.Module) -> Tensor:
    """The pre-norm block from its sub-modules (never ``blk(x)``: the chapter's own ``Block``
    calls this function from its forward)."""
    x = x + _self_attention(blk.norm1(x), blk.attn)[0]  # (B, L, D)
    return x + blk.mlp.fc2(F.gelu(blk.mlp.fc1(blk.norm2(x))))


@functools.cache
def _meta_block(size: str) -> nn.Module:
    """Block 0 of a library model of ``size`` on the meta device: shapes only, built once."""
    with torch.device("meta"):
        return SSASTModel.for_pretraining(size, input_tdim=32).v.blocks[0]


def _seeded_block(size: str, seed: int) -> nn.Module:
    """Block 0 of a library model of ``size``, with seeded weights of order 1/sqrt(fan_in) and
    LayerNorms off their (1, 0) init: at timm's tiny init (std 0.02) the tanh GELU, or a
    skipped norm weight, would change the output by less than the tolerance and go unnoticed.
    The model is built on the meta device (shapes only), so even ``base`` costs nothing."""
    blk = copy.deepcopy(_meta_block(size)).to_empty(device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in blk.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name.startswith("norm") and name.endswith("weight"):
                p.copy_(1 + 0.2 * noise)
            elif p.dim() == 2:
                p.copy_(noise * p.shape[1] ** -0.5)
            else:
                p.copy_(0.2 * noise if name.startswith("norm") else 0.1 * noise)
    return blk.eval()


def _block_cases(hidden: bool, default_seed: int) -> list[tuple[str, int, int, int]]:
    """(model size, weight seed, B, L): fixed visible cases; hidden ones drawn from the
    grader's seed (sizes, lengths, one-token sequences included)."""
    cases = [("mini", 0, 2, 10), ("tiny", 1, 1, 7)]
    if hidden:
        g = torch.Generator().manual_seed(hidden_seed(default_seed))
        for k in range(3):
            size = SIZES[int(torch.randint(len(SIZES), (1,), generator=g))]
            b, length = (int(torch.randint(lo, hi, (1,), generator=g)) for lo, hi in ((1, 4), (2, 40)))
            cases.append((size, 100 + k + int(torch.randint(1000, (1,), generator=g)), b, length))
        cases.append(("mini", 99, 2, 1))  # one token: its only weight is 1
    return cases


def _case_input(size: str, seed: int, b: int, length: int) -> tuple[nn.Module, Tensor, str]:
    blk = _seeded_block(size, seed)
    d = blk.norm1.normalized_shape[0]
    x = torch.randn(b, length, d, generator=torch.Generator().manual_seed(40 + seed))
    case = f"a seeded {size} block (D={d}, {blk.attn.num_heads} heads) on x of shape {(b, length, d)}"
    return blk, x, case


# ---------------------------------------------------------------------- exercise 1


def _attention_mistakes(h: Tensor, attn: nn.Module) -> tuple[list[Mistake], list[Mistake]]:
    """(mistakes on the output, mistakes on the weights), each computed with the module."""
    b, length, d = h.shape
    heads = attn.num_heads
    hd = d // heads
    qkv = attn.qkv(h)  # (B, L, 3D)

    def split(order: str) -> tuple[Tensor, Tensor, Tensor]:
        if order == "heads first":  # (B, L, heads, 3, hd): q/k/v interleaved per head
            parts = qkv.reshape(b, length, heads, 3, hd).permute(3, 0, 2, 1, 4)
        else:
            parts = qkv.reshape(b, length, 3, heads, hd).permute(2, 0, 3, 1, 4)
        return parts.unbind(0)

    def run(q, k, v, scale=hd**-0.5, dim=-1, merge=True, proj=True):
        w = torch.softmax(q @ k.transpose(-2, -1) * scale, dim=dim)  # (B, H, L, L)
        o = w @ v  # (B, H, L, hd)
        o = o.transpose(1, 2).reshape(b, length, d) if merge else o.reshape(b, length, d)
        return (attn.proj(o) if proj else o), w

    q, k, v = split("right")
    variants = {
        "the scale head_dim**-0.5 is missing": run(q, k, v, scale=1.0),
        "the scores are divided by head_dim, not by sqrt(head_dim)": run(q, k, v, scale=hd**-1.0),
        "the scores are scaled by D**-0.5, the model width; each head compares head_dim = "
        "D / heads numbers, so the scale is head_dim**-0.5": run(q, k, v, scale=d**-0.5),
        "the softmax runs over the queries (dim=-2); each query's weights must sum to 1 over "
        "the keys (dim=-1)": run(q, k, v, dim=-2),
        "qkv is split as (B, L, heads, 3, head_dim); the fused layer's output is "
        "[all q | all k | all v]: reshape to (B, L, 3, heads, head_dim)": run(*split("heads first")),
        "the heads are merged with a plain reshape of (B, heads, L, head_dim); transpose to "
        "(B, L, heads, head_dim) first, so each token's heads sit side by side": run(q, k, v, merge=False),
        "attn.proj is not applied to the merged heads": run(q, k, v, proj=False),
    }
    return (
        [(hint, out) for hint, (out, _) in variants.items()],
        [(hint, w) for hint, (_, w) in variants.items()],
    )


def _pair(got: Any, name: str, case: str) -> tuple[Any, Any]:
    if not isinstance(got, tuple | list) or len(got) != 2:
        raise ExerciseError(
            f"{name} on {case} should return a pair (output, weights), got {type(got).__name__}"
        )
    return got[0], got[1]


@checker(reference=_self_attention)
def check_self_attention(
    self_attention: Callable[[Tensor, nn.Module], tuple[Tensor, Tensor]], hidden: bool = False
) -> None:
    """``self_attention(h, attn) -> (output (B, L, D), weights (B, heads, L, L))`` must match the
    timm module ``attn``'s own forward and the explicit softmax weights."""
    cases = _block_cases(hidden, 4100)
    for size, seed, b, length in cases:
        blk, h, case = _case_input(size, seed, b, length)
        attn = blk.attn
        with torch.no_grad():
            got = call_student(self_attention, h.clone(), attn, case=case)
            out, weights = _pair(got, "self_attention(h, attn)", case)
            expected_out, expected_w = attn(h), _self_attention(h, attn)[1]
            out_mistakes, w_mistakes = _attention_mistakes(h, attn)
            check_with_hints(
                "the weights of self_attention(h, attn)", weights, expected_w, w_mistakes,
                case=case, atol=1e-5, rtol=1e-4,
            )
            check_with_hints(
                "the output of self_attention(h, attn)", out, expected_out, out_mistakes,
                case=case, atol=1e-4, rtol=1e-4,
            )
    what = "hidden cases" if hidden else "seeded mini and tiny attention modules"
    passed(4, 1, f"self_attention matches timm's Attention, output and weights ({what})")


# ---------------------------------------------------------------------- exercise 2


def _block_mistakes(x: Tensor, blk: nn.Module) -> list[Mistake]:
    """Outputs of a block written with one classic mistake each."""
    attn = blk.attn
    b, length, d = x.shape

    def attention(h: Tensor, scale: float) -> Tensor:
        qkv = attn.qkv(h).reshape(b, length, 3, attn.num_heads, d // attn.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, hd)
        out = ((q @ k.transpose(-2, -1)) * scale).softmax(-1) @ v  # (B, H, L, hd)
        return attn.proj(out.transpose(1, 2).reshape(b, length, d))  # (B, L, D)

    def mlp(h: Tensor, approximate: str = "none") -> Tensor:
        return blk.mlp.fc2(F.gelu(blk.mlp.fc1(h), approximate=approximate))

    scale = attn.head_dim**-0.5
    post = blk.norm1(x + attention(x, scale))
    post = blk.norm2(post + mlp(post))
    y = x + attention(blk.norm1(x), scale)  # (B, L, D) after the attention half
    unscaled = x + attention(blk.norm1(x), 1.0)
    wide = x + attention(blk.norm1(x), d**-0.5)
    return [
        (
            "a post-norm block (norm after the residual add); SSAST/DeiT is pre-norm: "
            "x + attn(norm1(x)), then x + mlp(norm2(x))",
            post,
        ),
        (
            "the tanh approximation of GELU; the block uses the exact (erf) GELU",
            y + mlp(blk.norm2(y), "tanh"),
        ),
        ("the MLP has no GELU between fc1 and fc2", y + blk.mlp.fc2(blk.mlp.fc1(blk.norm2(y)))),
        ("the attention scale head_dim**-0.5 is missing", unscaled + mlp(blk.norm2(unscaled))),
        (
            "the attention scale is D**-0.5 (the model width); it is head_dim**-0.5, head_dim = "
            "D / heads",
            wide + mlp(blk.norm2(wide)),
        ),
        ("the residual connections are missing", mlp(blk.norm2(attention(blk.norm1(x), scale)))),
        (
            "the MLP's input is norm2 of the block input x instead of norm2 of x + attn(...)",
            y + mlp(blk.norm2(x)),
        ),
        ("norm1 is used before both sub-layers; the MLP has its own norm2", y + mlp(blk.norm1(y))),
        ("the second residual adds x rather than x + attn(...)", x + mlp(blk.norm2(y))),
    ]


@checker(reference=_block_forward)
def check_block_forward(
    block_forward: Callable[[Tensor, nn.Module], Tensor], hidden: bool = False
) -> None:
    """``block_forward(x, blk)`` must equal ``blk(x)`` for the library's timm blocks."""
    for size, seed, b, length in _block_cases(hidden, 4200):
        blk, x, case = _case_input(size, seed, b, length)
        with torch.no_grad():
            expected = blk(x)  # (B, L, D)
            got = call_student(block_forward, x.clone(), blk, case=case)
            check_with_hints(
                "block_forward(x, blk)", got, expected, _block_mistakes(x, blk),
                case=case, atol=1e-4, rtol=1e-4,
            )
    what = "hidden cases" if hidden else "seeded mini and tiny blocks"
    passed(4, 2, f"your block forward equals timm's Block: pre-norm, fused qkv, exact GELU ({what})")


# ---------------------------------------------------------------------- exercise 3


def _padding_cases(hidden: bool) -> list[tuple[str, Tensor, Tensor, Tensor, Tensor]]:
    """(case, q, k, v, lengths): mixed lengths in a batch, a one-token clip, a clip with no
    padding; the padded tokens hold large values, so attending to them shows."""
    specs = [((3, 2, 6, 4), [6, 3, 1]), ((2, 4, 9, 8), [2, 9])]  # ((B, H, L, hd), lengths)
    if hidden:
        g = torch.Generator().manual_seed(hidden_seed(4300))
        for _ in range(3):
            b, h, length, hd = (int(torch.randint(lo, hi, (1,), generator=g))
                                for lo, hi in ((1, 5), (1, 5), (1, 20), (1, 17)))
            lengths = torch.randint(1, length + 1, (b,), generator=g).tolist()
            specs.append(((b, h, length, hd), lengths))
    out = []
    for seed, (shape, lengths) in enumerate(specs):
        g = torch.Generator().manual_seed(430 + seed)
        q, k, v = (torch.randn(shape, generator=g) for _ in range(3))
        lens = torch.tensor(lengths)
        pad = torch.arange(shape[2]) >= lens[:, None]  # (B, L): True on padding
        k = torch.where(pad[:, None, :, None], 10 * k, k)
        v = torch.where(pad[:, None, :, None], 100 + 10 * v, v)
        out.append((f"q, k, v of shape {shape} with lengths {lengths}", q, k, v, lens))
    return out


@checker()
def check_padded_attention(
    padded_attention: Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor]],
    hidden: bool = False,
) -> None:
    """``padded_attention(q, k, v, lengths) -> (output, weights)``: attention in which the keys
    at positions ``>= lengths[b]`` (padding) get weight exactly 0. Checked by properties:
    shapes, no NaN, zero weight on padded keys, rows that sum to one, and for every clip the
    same result as plain attention over its first ``lengths[b]`` keys."""
    for case, q, k, v, lengths in _padding_cases(hidden):
        got = call_student(padded_attention, q.clone(), k.clone(), v.clone(), lengths.clone(), case=case)
        out, weights = _pair(got, "padded_attention(q, k, v, lengths)", case)
        b, heads, length, hd = q.shape
        for name, value, shape in (("output", out, (b, heads, length, hd)),
                                   ("weights", weights, (b, heads, length, length))):
            if not isinstance(value, Tensor) or tuple(value.shape) != shape:
                got_shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ExerciseError(f"the {name} on {case} should have shape {shape}, got {got_shape}")
        if not bool(torch.isfinite(weights).all() and torch.isfinite(out).all()):
            raise ExerciseError(
                f"the weights or the output on {case} hold NaN or inf: mask the keys (the last "
                "dim of the scores) only; a query row of all -inf makes softmax return NaN"
            )
        pad = torch.arange(length) >= lengths[:, None]  # (B, L)
        leaked = weights.masked_fill(~pad[:, None, None, :], 0).abs().max().item()
        if leaked > 1e-6:
            raise ExerciseError(
                f"on {case} padded keys get weight up to {leaked:.3g}; it must be exactly 0. Set "
                "the scores of keys at positions >= lengths[b] to -inf BEFORE the softmax (a score "
                "of 0 still gets exp(0)); position lengths[b] is the first padded one"
            )
        sums = weights.sum(-1)  # (B, H, L)
        if not torch.allclose(sums, torch.ones_like(sums), atol=1e-5):
            worst = (sums - 1).abs().max().item()
            raise ExerciseError(
                f"on {case} the rows of the weights do not sum to 1 (off by up to {worst:.3g}): "
                "zeroing padded weights after the softmax leaves the rest unnormalised; mask "
                "the scores before the softmax instead"
            )
        for i, n in enumerate(lengths.tolist()):
            kb, vb = k[i : i + 1, :, :n], v[i : i + 1, :, :n]  # the clip's real keys only
            w = torch.softmax(q[i : i + 1] @ kb.transpose(-2, -1) * hd**-0.5, dim=-1)
            where = f"{case}, clip {i} (length {n})"
            check_tensor("its weights on the real keys", weights[i : i + 1, ..., :n], w,
                         case=where, atol=1e-5, rtol=1e-4)
            check_tensor("its output", out[i : i + 1], w @ vb, case=where, atol=1e-4, rtol=1e-4)
    what = "hidden cases" if hidden else "mixed lengths, one-token and unpadded clips"
    passed(4, 3, f"padded_attention ignores the padding and normalises over the real keys ({what})")


# ---------------------------------------------------------------------- exercise 4


def _crop_reference(grid: Tensor, t_dim: int) -> Tensor:
    """The library's centre crop: ``adapt_pos_embed`` with no class tokens and the same rows."""
    _, d, p_f, p_t = grid.shape
    flat = grid.flatten(2).transpose(1, 2)  # (1, p_f*p_t, D)
    out = adapt_pos_embed(flat, 0, p_f, p_t, p_f, t_dim)  # (1, p_f*t, D)
    return out.transpose(1, 2).reshape(1, d, p_f, t_dim)  # (1, D, p_f, t)


@checker()
def check_center_crop(
    center_crop_time: Callable[[Tensor, int], Tensor], hidden: bool = False
) -> None:
    """``center_crop_time(grid, t_dim)``: the official time crop of a ``(1, D, p_f, p_t)`` grid."""
    cases = [(3, 8, 16, 8), (2, 2, 8, 3), (4, 1, 12, 5)]  # (D, p_f, p_t, t_dim)
    if hidden:
        cases += [(5, 4, 7, 2), (3, 8, 64, 49), (2, 1, 512, 99), (2, 3, 9, 8)]
        g = torch.Generator().manual_seed(hidden_seed(4400))
        for _ in range(3):
            p_t = int(torch.randint(2, 80, (1,), generator=g))
            cases.append((2, int(torch.randint(1, 9, (1,), generator=g)), p_t,
                          int(torch.randint(1, p_t, (1,), generator=g))))
    for seed, (d, p_f, p_t, t_dim) in enumerate(cases):
        grid = torch.randn(1, d, p_f, p_t, generator=torch.Generator().manual_seed(4000 + seed))
        case = f"a (1, {d}, {p_f}, {p_t}) grid cropped to t_dim={t_dim}"
        got = call_student(center_crop_time, grid.clone(), t_dim, case=case)
        expected = _crop_reference(grid, t_dim)
        other = (p_t - t_dim) // 2
        mistakes = [
            (
                f"the crop starts at (p_t - t_dim)//2 = {other}; the official start is "
                f"p_t//2 - t_dim//2 = {p_t // 2 - t_dim // 2} (they differ when p_t is even and "
                "t_dim odd)",
                grid[..., other : other + t_dim],
            ),
            (
                "the crop keeps the first t_dim columns; the official crop is centred",
                grid[..., :t_dim],
            ),
        ]
        check_with_hints("center_crop_time(grid, t_dim)", got, expected, mistakes, case=case)
    passed(4, 4, "your centre crop picks the same time columns as the official adaptation")
