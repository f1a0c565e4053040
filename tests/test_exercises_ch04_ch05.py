"""The chapter 04/05 checkers accept the library's answers and explain wrong ones."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssast_teach.exercises import ExerciseError, ch04, ch05
from ssast_teach.losses import info_nce_loss, mse_loss
from ssast_teach.model import adapt_pos_embed

# graded behaviour: a stub's check raises (tests/test_exercises_common.py covers the other)
pytestmark = pytest.mark.usefixtures("grading")

# ------------------------------------------------------------------ correct answers pass


def attention_ok(q, k, v):
    return F.scaled_dot_product_attention(q, k, v)


def crop_ok(grid, t_dim):
    _, d, p_f, p_t = grid.shape
    out = adapt_pos_embed(grid.flatten(2).transpose(1, 2), 0, p_f, p_t, p_f, t_dim)
    return out.transpose(1, 2).reshape(1, d, p_f, t_dim)


def masked_mse_ok(pred, patches, mask_ids):
    target = patches.gather(1, mask_ids.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
    return mse_loss(pred, target)


@pytest.mark.parametrize("hidden", [False, True])
def test_library_answers_pass(hidden, capsys):
    ch04.check_attention(attention_ok, hidden=hidden)
    ch04.check_block_forward(lambda x, blk: blk(x), hidden=hidden)
    ch04.check_center_crop(crop_ok, hidden=hidden)
    ch05.check_info_nce(lambda p, t: info_nce_loss(p, t)[1], hidden=hidden)
    ch05.check_masked_accuracy(lambda p, t: info_nce_loss(p, t)[0], hidden=hidden)
    ch05.check_masked_mse(masked_mse_ok, hidden=hidden)
    lines = capsys.readouterr().out.splitlines()
    expected = [f"✓ ch0{c} exercise {k}:" for c in (4, 5) for k in (1, 2, 3)]
    assert [line.split(":")[0] + ":" for line in lines] == expected


def test_written_out_block_passes():
    def block_forward(x, blk):
        b, length, d = x.shape
        a = blk.attn
        qkv = a.qkv(blk.norm1(x)).reshape(b, length, 3, a.num_heads, d // a.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        w = (q @ k.transpose(-2, -1) * (d // a.num_heads) ** -0.5).softmax(-1)
        x = x + a.proj((w @ v).transpose(1, 2).reshape(b, length, d))
        return x + blk.mlp.fc2(F.gelu(blk.mlp.fc1(blk.norm2(x))))

    ch04.check_block_forward(block_forward, hidden=True)


# ------------------------------------------------------------------ wrong answers explained


def not_implemented(*args):
    raise NotImplementedError()


@pytest.mark.parametrize(
    "check",
    [
        ch04.check_attention,
        ch04.check_block_forward,
        ch04.check_center_crop,
        ch05.check_info_nce,
        ch05.check_masked_accuracy,
        ch05.check_masked_mse,
    ],
)
def test_not_implemented_is_reported(check):
    with pytest.raises(ExerciseError, match="not implemented yet"):
        check(not_implemented)


def test_attention_mistakes():
    with pytest.raises(ExerciseError, match="scale head_dim"):
        ch04.check_attention(lambda q, k, v: (q @ k.transpose(-2, -1)).softmax(-1) @ v)

    def softmax_over_queries(q, k, v):
        return (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(-2) @ v

    with pytest.raises(ExerciseError, match="dim=-1"):
        ch04.check_attention(softmax_over_queries)
    with pytest.raises(ExerciseError, match="has shape"):
        ch04.check_attention(lambda q, k, v: q @ k.transpose(-2, -1))


def test_block_mistakes():
    def post_norm(x, blk):
        x = blk.norm1(x + blk.attn(x))
        return blk.norm2(x + blk.mlp(x))

    with pytest.raises(ExerciseError, match="post-norm"):
        ch04.check_block_forward(post_norm)

    def tanh_gelu(x, blk):
        x = x + blk.attn(blk.norm1(x))
        return x + blk.mlp.fc2(F.gelu(blk.mlp.fc1(blk.norm2(x)), approximate="tanh"))

    with pytest.raises(ExerciseError, match="tanh"):
        ch04.check_block_forward(tanh_gelu)


def test_crop_mistakes():
    def wrong_start(grid, t_dim):
        start = (grid.shape[-1] - t_dim) // 2
        return grid[..., start : start + t_dim]

    with pytest.raises(ExerciseError, match=r"p_t//2 - t_dim//2"):
        ch04.check_center_crop(wrong_start)
    with pytest.raises(ExerciseError, match="first t_dim columns"):
        ch04.check_center_crop(lambda grid, t_dim: grid[..., :t_dim])


def test_info_nce_mistakes():
    with pytest.raises(ExerciseError, match="Eq. 1"):
        ch05.check_info_nce(lambda p, t: info_nce_loss(p, t, softmax_quirk=False)[1])
    with pytest.raises(ExerciseError, match="minus sign"):
        ch05.check_info_nce(lambda p, t: -info_nce_loss(p, t)[1])
    with pytest.raises(ExerciseError, match="should be a torch.Tensor"):
        ch05.check_info_nce(lambda p, t: float(info_nce_loss(p, t)[1]))


def test_accuracy_mistakes():
    def raw_argmax(p, t):
        s = t @ p.transpose(1, 2)
        return (s.argmax(dim=1) == torch.arange(s.shape[-1])).float().mean()

    with pytest.raises(ExerciseError, match="raw S"):
        ch05.check_masked_accuracy(raw_argmax)
    with pytest.raises(ExerciseError, match="paper"):
        ch05.check_masked_accuracy(lambda p, t: info_nce_loss(p, t, softmax_quirk=False)[0])


def test_masked_mse_mistakes():
    with pytest.raises(ExerciseError, match="first M patches"):
        ch05.check_masked_mse(lambda pred, patches, ids: mse_loss(pred, patches[:, : ids.shape[1]]))

    def summed(pred, patches, ids):
        target = patches.gather(1, ids.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
        return ((pred - target) ** 2).sum()

    with pytest.raises(ExerciseError, match="sum instead"):
        ch05.check_masked_mse(summed)
