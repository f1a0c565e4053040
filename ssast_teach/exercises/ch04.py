"""Checkers for chapter 04 (the encoder): attention, one transformer block, the pos-embed crop.

Each checker runs the student's function on seeded cases and compares it with the reference
(PyTorch's ``scaled_dot_product_attention``, the library model's own timm block, and
:func:`ssast_teach.model.adapt_pos_embed`). When a wrong answer equals a known mistake (no
scale, post-norm, the tanh GELU, ...), the message names that mistake.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssast_teach.exercises import (
    Mistake,
    call_student,
    check_with_hints,
    checker,
    passed,
)
from ssast_teach.model import SSASTModel, adapt_pos_embed

# ---------------------------------------------------------------------------- exercise 1


def _attention_cases(hidden: bool) -> list[tuple[str, Tensor, Tensor, Tensor]]:
    shapes = [(2, 3, 5, 4), (1, 4, 7, 16)]  # (B, heads, L, head_dim)
    if hidden:
        shapes += [(3, 1, 2, 8), (2, 2, 11, 3)]
    cases = []
    for seed, shape in enumerate(shapes):
        g = torch.Generator().manual_seed(400 + seed)
        q, k, v = (torch.randn(shape, generator=g) for _ in range(3))
        cases.append((f"seeded case {seed} with q, k, v of shape {shape}", q, k, v))
    return cases


@checker()
def check_attention(
    attention: Callable[[Tensor, Tensor, Tensor], Tensor], hidden: bool = False
) -> None:
    """``attention(q, k, v)``: ``softmax(q k^T * head_dim^-0.5) v`` for ``(B, heads, L, hd)``."""
    for case, q, k, v in _attention_cases(hidden):
        got = call_student(attention, q.clone(), k.clone(), v.clone(), case=case)
        expected = F.scaled_dot_product_attention(q, k, v)  # (B, H, L, hd)
        scores = q @ k.transpose(-2, -1)  # (B, H, L, L)
        scale = q.shape[-1] ** -0.5
        mistakes = [
            ("the scale head_dim**-0.5 is missing", scores.softmax(-1) @ v),
            (
                "the scores are divided by head_dim, not by sqrt(head_dim)",
                (scores / q.shape[-1]).softmax(-1) @ v,
            ),
            (
                "the softmax runs over the queries (dim=-2); each query's weights must sum to 1 "
                "over the keys (dim=-1)",
                (scores * scale).softmax(-2) @ v,
            ),
        ]
        check_with_hints("attention(q, k, v)", got, expected, mistakes, case=case)
    passed(4, 1, "scaled dot-product attention matches softmax(q k^T / sqrt(head_dim)) v")


# ---------------------------------------------------------------------------- exercise 2


def _seeded_block(size: str, seed: int) -> nn.Module:
    """Block 0 of a library model of ``size``, with seeded weights of order 1/sqrt(fan_in) and
    LayerNorms off their (1, 0) init: at timm's tiny init (std 0.02) the tanh GELU, or a
    skipped norm weight, would change the output by less than the tolerance and go unnoticed.
    The model is built on the meta device (shapes only), so even ``base`` costs nothing."""
    with torch.device("meta"):
        blk = SSASTModel.for_pretraining(size, input_tdim=32).v.blocks[0]
    blk = blk.to_empty(device="cpu")
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
        ("the attention scale head_dim**-0.5 is missing", unscaled + mlp(blk.norm2(unscaled))),
        ("the residual connections are missing", mlp(blk.norm2(attention(blk.norm1(x), scale)))),
        (
            "the MLP's input is norm2 of the block input x instead of norm2 of x + attn(...)",
            y + mlp(blk.norm2(x)),
        ),
        ("the second residual adds x rather than x + attn(...)", x + mlp(blk.norm2(y))),
    ]


@checker()
def check_block_forward(
    block_forward: Callable[[Tensor, nn.Module], Tensor], hidden: bool = False
) -> None:
    """``block_forward(x, blk)`` must equal ``blk(x)`` for the library's timm blocks."""
    cases = [("mini", 0, (2, 10))]  # (model size, seed, (B, L))
    if hidden:
        cases += [("mini", 1, (1, 34)), ("tiny", 2, (2, 6)), ("base", 3, (1, 5))]
    for size, seed, (b, length) in cases:
        blk = _seeded_block(size, seed)
        d = blk.norm1.normalized_shape[0]
        x = torch.randn(b, length, d, generator=torch.Generator().manual_seed(40 + seed))
        heads = blk.attn.num_heads
        case = f"a seeded {size} block (D={d}, {heads} heads) on x of shape {(b, length, d)}"
        with torch.no_grad():
            expected = blk(x)  # (B, L, D)
            got = call_student(block_forward, x.clone(), blk, case=case)
            check_with_hints(
                "block_forward(x, blk)",
                got,
                expected,
                _block_mistakes(x, blk),
                case=case,
                atol=1e-4,
                rtol=1e-4,
            )
    passed(4, 2, "your block forward equals timm's Block (pre-norm, fused qkv, exact GELU)")


# ---------------------------------------------------------------------------- exercise 3


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
    passed(4, 3, "your centre crop picks the same time columns as the official adaptation")
