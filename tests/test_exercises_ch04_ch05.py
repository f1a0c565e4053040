"""The chapter 04/05 checkers accept the worked answers, report stubs, reject each plausible
wrong answer by name, and draw their hidden cases from the grader's seed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssast_teach.exercises import GRADER_SEED_ENV, ExerciseError, ch04, ch05
from ssast_teach.losses import info_nce_loss, mse_loss
from ssast_teach.model import adapt_pos_embed

# graded behaviour: a stub's check raises (the non-grading behaviour is tested with capsys)
pytestmark = pytest.mark.usefixtures("grading")

# ------------------------------------------------------------------ the worked solutions


def self_attention(h, attn):
    b, length, d = h.shape
    heads = attn.num_heads
    qkv = attn.qkv(h).reshape(b, length, 3, heads, d // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    weights = torch.softmax(q @ k.transpose(-2, -1) * (d // heads) ** -0.5, dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(b, length, d)
    return attn.proj(out), weights


def block_forward(x, blk):
    x = x + self_attention(blk.norm1(x), blk.attn)[0]
    return x + blk.mlp.fc2(F.gelu(blk.mlp.fc1(blk.norm2(x))))


def padded_attention(q, k, v, lengths, mode="right"):
    real = torch.arange(k.shape[2]) < lengths[:, None]  # (B, L)
    if mode == "off by one":
        real = torch.arange(k.shape[2]) <= lengths[:, None]
    scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5
    if mode == "zeroed scores":
        weights = torch.softmax(scores * real[:, None, None, :], dim=-1)
    elif mode == "masked after softmax":
        weights = torch.softmax(scores, dim=-1) * real[:, None, None, :]
    elif mode == "masked queries":
        weights = torch.softmax(scores.masked_fill(~real[:, None, :, None], float("-inf")), -1)
    elif mode == "no mask":
        weights = torch.softmax(scores, dim=-1)
    else:
        weights = torch.softmax(scores.masked_fill(~real[:, None, None, :], float("-inf")), -1)
    return weights @ v, weights


def center_crop_time(grid, t_dim):
    start = grid.shape[-1] // 2 - t_dim // 2
    return grid[..., start : start + t_dim]


def info_nce(c, x, softmax_quirk=True):
    s = x @ c.transpose(1, 2)
    if not softmax_quirk:
        s = s.transpose(1, 2)
    nce = -torch.log_softmax(s, dim=-1).diagonal(dim1=-2, dim2=-1).mean()
    winners = torch.softmax(s, dim=-1).argmax(dim=1)
    return (winners == torch.arange(s.shape[-1])).float().mean(), nce


def masked_mse(pred, patches, mask_ids):
    index = mask_ids.unsqueeze(-1).expand(-1, -1, patches.shape[-1])
    return ((pred - patches.gather(1, index)) ** 2).mean()


def cosine_info_nce(pred, target, tau):
    s = F.normalize(target, dim=-1) @ F.normalize(pred, dim=-1).transpose(1, 2) / tau
    return -torch.log_softmax(s, dim=-1).diagonal(dim1=-2, dim2=-1).mean()


WORKED = [
    (ch04.check_self_attention, self_attention, True),  # (checker, answer, has a reference)
    (ch04.check_block_forward, block_forward, True),
    (ch04.check_padded_attention, padded_attention, False),
    (ch04.check_center_crop, center_crop_time, False),
    (ch05.check_info_nce, info_nce, True),
    (ch05.check_masked_mse, masked_mse, True),
    (ch05.check_cosine_info_nce, cosine_info_nce, False),
]


@pytest.mark.parametrize("hidden", [False, True])
def test_worked_solutions_pass(hidden, capsys):
    for check, answer, has_reference in WORKED:
        kept = check(answer, hidden=hidden)
        assert kept is (answer if has_reference else None)
    lines = capsys.readouterr().out.splitlines()
    expected = [f"✓ ch04 exercise {k}:" for k in (1, 2, 3, 4)]
    expected += [f"✓ ch05 exercise {k}:" for k in (1, 2, 3)]
    assert [line.split(":")[0] + ":" for line in lines] == expected


def test_library_answers_pass():
    ch04.check_block_forward(lambda x, blk: blk(x), hidden=True)
    ch04.check_center_crop(
        lambda grid, t: adapt_pos_embed(grid.flatten(2).transpose(1, 2), 0, grid.shape[2],
                                        grid.shape[3], grid.shape[2], t)
        .transpose(1, 2).reshape(1, grid.shape[1], grid.shape[2], t),
        hidden=True,
    )
    ch05.check_info_nce(lambda c, x, softmax_quirk=True: info_nce_loss(c, x, softmax_quirk=softmax_quirk))


# ------------------------------------------------------------------ stubs


def not_implemented(*args, **kwargs):
    raise NotImplementedError()


@pytest.mark.parametrize("check", [check for check, _, _ in WORKED])
def test_not_implemented_is_reported(check):
    with pytest.raises(ExerciseError, match="not implemented yet"):
        check(not_implemented)


@pytest.mark.parametrize("check, has_reference", [(c, r) for c, _, r in WORKED])
def test_outside_grading_a_stub_is_reported_and_the_chapter_goes_on(check, has_reference, monkeypatch, capsys):
    from ssast_teach.exercises import GRADING_ENV

    monkeypatch.delenv(GRADING_ENV)
    kept = check(not_implemented)
    out = capsys.readouterr().out
    assert "not implemented yet" in out
    if has_reference:
        assert "goes on with the library's version" in out
        assert kept is not None and kept is not not_implemented
    else:
        assert kept is None


def test_the_library_versions_handed_on_work_in_the_chapter(monkeypatch, capsys):
    """The functions a stub's check hands on must pass their own checks (the chapter runs on)."""
    from ssast_teach.exercises import GRADING_ENV

    monkeypatch.delenv(GRADING_ENV)
    for check, _, has_reference in WORKED:
        if has_reference:
            check(check(not_implemented), hidden=True)


# ------------------------------------------------------------------ hidden cases follow the seed


@pytest.mark.parametrize("check", [check for check, _, _ in WORKED])
def test_hidden_cases_change_with_the_grader_seed(check, monkeypatch):
    """A spy that answers right records the input shapes of every hidden case."""
    answer = next(a for c, a, _ in WORKED if c is check)

    def cases(seed):
        monkeypatch.setenv(GRADER_SEED_ENV, str(seed))
        shapes = []

        def spy(*args, **kwargs):
            shapes.append(tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor)))
            return answer(*args, **kwargs)

        check(spy, hidden=True)
        return shapes

    assert cases(1) != cases(2)
    assert cases(3) == cases(3)


# ------------------------------------------------------------------ wrong answers, named


def attention_variant(order="ok", scale=True, dim=-1, merge=True, proj=True, pair=True):
    """A self-attention with one mistake; ``scale``: True (head_dim**-0.5), False (none) or
    ``"width"`` (the model width's D**-0.5)."""

    def wrong(h, attn):
        b, length, d = h.shape
        heads = attn.num_heads
        if order == "ok":
            q, k, v = attn.qkv(h).reshape(b, length, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        else:
            q, k, v = attn.qkv(h).reshape(b, length, heads, 3, d // heads).permute(3, 0, 2, 1, 4)
        factor = {True: (d // heads) ** -0.5, False: 1.0, "width": d**-0.5}[scale]
        w = (q @ k.transpose(-2, -1) * factor).softmax(dim)
        out = w @ v
        out = out.transpose(1, 2).reshape(b, length, d) if merge else out.reshape(b, length, d)
        out = attn.proj(out) if proj else out
        return (out, w) if pair else out

    return wrong


@pytest.mark.parametrize(
    "wrong, message",
    [
        (attention_variant(order="heads first"), r"\(B, L, heads, 3, head_dim\)"),
        (attention_variant(scale=False), "scale head_dim"),
        (attention_variant(scale="width"), r"scaled by D\*\*-0.5, the model width"),
        (attention_variant(dim=-2), "over the queries"),
        (attention_variant(merge=False), "plain reshape"),
        (attention_variant(proj=False), "attn.proj is not applied"),
        (attention_variant(pair=False), r"pair \(output, weights\)"),
        (lambda h, attn: (attn(h), None), "should be a torch.Tensor"),
    ],
    ids=["qkv split", "no scale", "width scale", "softmax over queries", "heads merged", "no proj", "no weights",
         "weights missing"],
)
def test_self_attention_mistakes(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        ch04.check_self_attention(wrong)


def post_norm(x, blk):
    x = blk.norm1(x + blk.attn(x))
    return blk.norm2(x + blk.mlp(x))


def tanh_gelu(x, blk):
    x = x + blk.attn(blk.norm1(x))
    return x + blk.mlp.fc2(F.gelu(blk.mlp.fc1(blk.norm2(x)), approximate="tanh"))


def norm1_twice(x, blk):
    x = x + blk.attn(blk.norm1(x))
    return x + blk.mlp(blk.norm1(x))


def width_scale(x, blk):
    attention = attention_variant(scale="width")
    x = x + attention(blk.norm1(x), blk.attn)[0]
    return x + blk.mlp(blk.norm2(x))


def no_residual(x, blk):
    return blk.mlp(blk.norm2(blk.attn(blk.norm1(x))))


def mlp_on_input(x, blk):
    return x + blk.attn(blk.norm1(x)) + blk.mlp(blk.norm2(x))


@pytest.mark.parametrize(
    "wrong, message",
    [
        (post_norm, "post-norm"),
        (tanh_gelu, "tanh"),
        (norm1_twice, "norm1 is used before both"),
        (no_residual, "residual connections are missing"),
        (width_scale, r"scale is D\*\*-0.5 \(the model width\)"),
        (mlp_on_input, "norm2 of the block input x"),
    ],
    ids=["post-norm", "tanh GELU", "norm1 twice", "no residual", "width scale", "MLP on the input"],
)
def test_block_mistakes(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        ch04.check_block_forward(wrong)


@pytest.mark.parametrize(
    "mode, message",
    [
        ("zeroed scores", "padded keys get weight"),
        ("masked after softmax", "do not sum to 1"),
        ("masked queries", "NaN"),
        ("no mask", "padded keys get weight"),
        ("off by one", "first padded one"),
    ],
)
def test_padded_attention_mistakes(mode, message):
    with pytest.raises(ExerciseError, match=message):
        ch04.check_padded_attention(lambda q, k, v, lengths: padded_attention(q, k, v, lengths, mode))


def test_padded_attention_scales_and_shapes():
    def unscaled(q, k, v, lengths):
        return padded_attention(q * q.shape[-1] ** 0.5, k, v, lengths)

    with pytest.raises(ExerciseError, match="weights on the real keys"):
        ch04.check_padded_attention(unscaled)
    with pytest.raises(ExerciseError, match="should have shape"):
        ch04.check_padded_attention(lambda q, k, v, lengths: (v, v))


def test_crop_mistakes():
    def wrong_start(grid, t_dim):
        start = (grid.shape[-1] - t_dim) // 2
        return grid[..., start : start + t_dim]

    with pytest.raises(ExerciseError, match=r"p_t//2 - t_dim//2"):
        ch04.check_center_crop(wrong_start)
    with pytest.raises(ExerciseError, match="first t_dim columns"):
        ch04.check_center_crop(lambda grid, t_dim: grid[..., :t_dim])


def raw_argmax(c, x, softmax_quirk=True):
    s = x @ c.transpose(1, 2)
    s = s if softmax_quirk else s.transpose(1, 2)
    return (s.argmax(dim=1) == torch.arange(s.shape[-1])).float().mean(), info_nce(c, x, softmax_quirk)[1]


def row_argmax(c, x, softmax_quirk=True):
    s = x @ c.transpose(1, 2)
    s = s if softmax_quirk else s.transpose(1, 2)
    winners = torch.softmax(s, -1).argmax(dim=2)
    return (winners == torch.arange(s.shape[-1])).float().mean(), info_nce(c, x, softmax_quirk)[1]


def nce_variant(how):
    def wrong(c, x, softmax_quirk=True):
        acc, _ = info_nce(c, x, softmax_quirk)
        s = x @ c.transpose(1, 2)
        s = s if softmax_quirk else s.transpose(1, 2)
        log_sm = torch.log_softmax(s, -1)
        diag = log_sm.diagonal(dim1=-2, dim2=-1)
        return acc, {"no minus": diag.mean(), "sum": -diag.sum(), "whole matrix": -log_sm.mean()}[how]

    return wrong


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda c, x, softmax_quirk=True: info_nce(c, x), "softmax_quirk=False gives the official form"),
        (lambda c, x, softmax_quirk=True: info_nce(c, x, not softmax_quirk), "other form"),
        (lambda c, x, softmax_quirk=True: info_nce(c, x, softmax_quirk)[::-1], r"returns \(nce, acc\)"),
        (lambda c, x, softmax_quirk=True: info_nce(c, x, softmax_quirk)[1], r"pair \(acc, nce\)"),
        (raw_argmax, "raw S"),
        (row_argmax, "argmax along each row"),
        (nce_variant("no minus"), "minus sign"),
        (nce_variant("sum"), "sum instead of the mean"),
        (nce_variant("whole matrix"), "whole log_softmax matrix"),
        (
            lambda c, x, softmax_quirk=True: (info_nce(c, x, softmax_quirk)[0], float(info_nce(c, x)[1])),
            "should be a torch.Tensor",
        ),
    ],
    ids=["quirk ignored", "forms swapped", "(nce, acc)", "nce only", "raw argmax", "row argmax",
         "no minus", "sum", "whole matrix", "float"],
)
def test_info_nce_mistakes(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        ch05.check_info_nce(wrong)


def gathered(patches, ids):
    return patches.gather(1, ids.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda pred, patches, ids: mse_loss(pred, patches[:, : ids.shape[1]]), "first M patches"),
        (lambda pred, patches, ids: mse_loss(pred, patches[:, ids[0]]), "first clip's mask_ids"),
        (lambda pred, patches, ids: ((pred - gathered(patches, ids)) ** 2).sum(), "sum instead"),
        (lambda pred, patches, ids: ((pred - gathered(patches, ids)) ** 2).sum(-1).mean(), "per-patch sums"),
        (lambda pred, patches, ids: ((pred - gathered(patches, ids)) ** 2).mean().sqrt(), "RMSE"),
    ],
    ids=["first M", "first clip's ids", "sum", "per-patch sums", "RMSE"],
)
def test_masked_mse_mistakes(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        ch05.check_masked_mse(wrong)


def cosine_variant(how):
    def wrong(pred, target, tau):
        xn, cn = F.normalize(target, dim=-1), F.normalize(pred, dim=-1)
        if how == "target only":
            cn = pred
        if how == "patch axis":
            xn, cn = F.normalize(target, dim=1), F.normalize(pred, dim=1)
        t = {"no tau": 1.0, "times tau": 1 / tau}.get(how, tau)
        s = xn @ cn.transpose(1, 2) / t
        dim = 1 if how == "paper direction" else -1
        loss = -torch.log_softmax(s, dim).diagonal(dim1=-2, dim2=-1).mean()
        return -loss if how == "no minus" else loss

    return wrong


@pytest.mark.parametrize(
    "how, message",
    [
        ("no tau", "tau is not used"),
        ("times tau", "multiplied by tau"),
        ("no minus", "minus sign"),
        ("target only", "whatever the patches' loudness"),
        ("patch axis", "whatever the patches' loudness"),
        ("paper direction", "paper's direction"),
    ],
)
def test_cosine_info_nce_mistakes(how, message):
    with pytest.raises(ExerciseError, match=message):
        ch05.check_cosine_info_nce(cosine_variant(how))


def test_cosine_info_nce_properties_catch_what_a_closed_form_misses():
    """A loss right at perfect prediction but not scale-invariant elsewhere, and one that is
    scale-invariant and bounded but not the definition, are both rejected by name."""

    def loud_only_off_perfect(pred, target, tau):
        perfect = torch.allclose(F.normalize(pred, dim=-1), F.normalize(target, dim=-1), atol=1e-5)
        return cosine_info_nce(pred if perfect else pred + 0.1 * pred.norm(), target, tau)

    with pytest.raises(ExerciseError, match="positive factor"):
        ch05.check_cosine_info_nce(loud_only_off_perfect)

    def halved_off_perfect(pred, target, tau):
        perfect = torch.allclose(F.normalize(pred, dim=-1), F.normalize(target, dim=-1), atol=1e-5)
        return cosine_info_nce(pred, target, tau) * (1 if perfect else 0.5)

    with pytest.raises(ExerciseError, match="wrong values"):
        ch05.check_cosine_info_nce(halved_off_perfect)
    with pytest.raises(ExerciseError, match="0-d float tensor"):
        ch05.check_cosine_info_nce(lambda pred, target, tau: cosine_info_nce(pred, target, tau).reshape(1))
