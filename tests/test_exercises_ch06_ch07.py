"""The chapter 06/07 checkers accept right answers, report stubs, name each plausible wrong
answer, and draw their hidden cases from the grader's seed."""

from __future__ import annotations

import pickle

import pytest
import torch

from ssast_teach.exercises import GRADER_SEED_ENV, ExerciseError, ch06, ch07
from ssast_teach.finetune import FinetuneConfig, average_precision, confusion_matrix, param_groups
from ssast_teach.losses import info_nce_loss, mse_loss
from ssast_teach.masking import mask_to_dense
from ssast_teach.patches import fold_patches, to_image, unfold_patches
from ssast_teach.pretrain import draw_masks
from ssast_teach.training import step_generator, warmup_lr

# graded behaviour: a stub's check raises (the non-grading behaviour is tested with capsys)
pytestmark = pytest.mark.usefixtures("grading")

# ------------------------------------------------------------------ right answers pass


def warmup_ok(step, base_lr, warmup_steps=1000, every=50):
    if step <= warmup_steps and step % every == 0:
        return step / warmup_steps * base_lr
    return None


def forward_ok(model, x, mask_ids, mistake=None):
    """The masked forward pass from the model's parts; ``mistake`` names a wrong variant."""
    v, c, b = model.v, model.cls_token_num, len(x)
    image = to_image(x)  # (B, 1, F, T)
    patches = unfold_patches(image, model.grid)  # (B, N, P)
    hidden = mask_to_dense(mask_ids, model.grid.num_patches).unsqueeze(-1)  # (B, N, 1)
    tokens = v.patch_embed(image)  # (B, N, D)
    if mistake == "added":
        tokens = tokens + model.mask_embed * hidden
    elif mistake != "after pos":
        tokens = torch.where(hidden, model.mask_embed, tokens)
    h = torch.cat([v.cls_token.expand(b, -1, -1), v.dist_token.expand(b, -1, -1), tokens], 1)
    h = h if mistake == "no pos" else v.pos_drop(h + v.pos_embed)
    if mistake == "after pos":
        h[:, c:] = torch.where(hidden, model.mask_embed, h[:, c:])
    for blk in v.blocks:
        h = blk(h)
    h = h if mistake == "no norm" else v.norm(h)
    ids = mask_ids.sort(1).values if mistake == "sorted" else mask_ids
    offset = {"no offset": 0, "offset 1": 1}.get(mistake, c)
    h_masked = h[torch.arange(b)[:, None], ids + offset]  # (B, M, D)
    target = patches[torch.arange(b)[:, None], ids]  # (B, M, P)
    if mistake == "every token":
        h_masked, target = h[:, c:], patches
    heads = (model.gpredlayer, model.cpredlayer) if mistake == "swapped heads" else (
        model.cpredlayer, model.gpredlayer)
    acc, nce = info_nce_loss(heads[0](h_masked), target, softmax_quirk=mistake != "paper softmax")
    mse = mse_loss(heads[1](h_masked), target)
    if mistake == "every token":
        h_masked = h[torch.arange(b)[:, None], mask_ids + c]
    return h_masked, acc, nce, mse


def joint_ok(model, x, mpc_mask, mpg_mask):
    return model.mpc(x, mpc_mask)[1] + 10 * model.mpg(x, mpg_mask)


def loop_ok(model, config, batches, evaluate, mistake=None):
    """The official pretraining loop written out; ``mistake`` names a wrong variant."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    betas, decay = ((0.9, 0.999), 0) if mistake == "adam defaults" else (
        config.betas, config.weight_decay)
    optimizer = torch.optim.Adam(trainable, lr=config.base_lr, betas=betas, weight_decay=decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min" if mistake == "min mode" else "max", factor=config.lr_factor,
        patience=config.lr_patience)
    shared = step_generator(config.seed, 0)
    losses = []
    for step, x in enumerate(batches):
        counted = step + 1 if mistake == "from 1" else step
        lr = warmup_lr(counted, config.base_lr, config.warmup_steps, config.warmup_every)
        if lr is not None and mistake not in ("lr after step", "no warm-up"):
            for group in optimizer.param_groups:
                group["lr"] = lr
        generator = shared if mistake == "one generator" else step_generator(config.seed, counted)
        mpc_mask = draw_masks(config, model.grid.t_dim, len(x), generator, config.mask_patch)
        if mistake == "fresh generator per mask":
            generator = step_generator(config.seed, counted)
        mpg_mask = draw_masks(config, model.grid.t_dim, len(x), generator, config.mask_patch)
        acc, nce = model.mpc(x, mpc_mask)
        loss = nce + (1 if mistake == "weight 1" else 10) * model.mpg(x, mpg_mask)
        if mistake != "no zero_grad":
            optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if lr is not None and mistake == "lr after step":
            for group in optimizer.param_groups:
                group["lr"] = lr
        losses.append(loss.item())
        if (step + (mistake != "early eval")) % config.epoch_iter == 0:
            metrics = evaluate()
            scheduler.step(loss.item() if mistake == "on the loss" else metrics["val_acc"])
    return losses


def fill_ok(pred, patches, mask_ids, grid):
    ids = mask_ids.unsqueeze(-1).expand(-1, -1, patches.shape[-1])
    return fold_patches(patches.scatter(1, ids, pred), grid)


def pack_greedy(lengths, target):  # the library's order: split order, fill, cut the last clip
    groups, pack, filled = [], [], 0
    for i, n in enumerate(lengths):
        if n >= target:
            groups.append([i])
            continue
        pack.append(i)
        filled += n
        if filled >= target:
            groups.append(pack)
            pack, filled = [], 0
    if pack:
        groups.append(pack)
    return groups


def pack_longest_first(lengths, target):  # another right answer: a different packing
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [[order[j] for j in group] for group in pack_greedy([lengths[i] for i in order], target)]


def ap_ties(scores, labels):  # tie-aware: one threshold per distinct score
    order = scores.argsort(descending=True)
    s, hits = scores[order], labels[order]
    last = torch.ones(len(s), dtype=torch.bool)
    last[:-1] = s[1:] != s[:-1]
    tp = hits.cumsum(0)[last]
    precision = tp / torch.arange(1, len(s) + 1)[last]
    gain = torch.diff(tp, prepend=tp.new_zeros(1)) / hits.sum()
    return (gain * precision).sum()  # a 0-d tensor is accepted too


def confusion_loop(scores, targets):
    c = scores.shape[1]
    m = torch.zeros(c, c, dtype=torch.long)
    for t, p in zip(targets.argmax(1), scores.argmax(1), strict=True):
        m[t, p] += 1
    return m


def probe_ok(model):
    return param_groups(model, FinetuneConfig(linear_probe=True))[0]["params"]


def pool_ok(tokens, n_real):
    real = (torch.arange(tokens.shape[1]) < n_real[:, None]).unsqueeze(-1)  # (B, N, 1)
    return torch.where(real, tokens, 0).sum(1) / n_real[:, None].to(tokens.dtype)


CHECKS = [
    (ch06.check_warmup_lr, warmup_ok),
    (ch06.check_masked_forward_pass, forward_ok),
    (ch06.check_joint_step_loss, joint_ok),
    (ch06.check_pretrain_loop, loop_ok),
    (ch06.check_fill_and_fold, fill_ok),
    (ch06.check_pack_clips, pack_greedy),
    (ch07.check_average_precision, average_precision),
    (ch07.check_confusion, confusion_matrix),
    (ch07.check_linear_probe, probe_ok),
    (ch07.check_real_token_mean, pool_ok),
]


@pytest.mark.parametrize("hidden", [False, True])
def test_right_answers_pass(hidden, capsys):
    for check, answer in CHECKS:
        check(answer, hidden=hidden)
    lines = capsys.readouterr().out.splitlines()
    expected = [f"✓ ch06 exercise {k}:" for k in range(1, 7)]
    expected += [f"✓ ch07 exercise {k}:" for k in (1, 2, 3, 5)]  # 4, the loop: its own test file
    assert [line.split(":")[0] + ":" for line in lines] == expected


def test_other_right_answers_pass():
    ch06.check_pack_clips(pack_longest_first, hidden=True)
    ch07.check_average_precision(ap_ties, hidden=True)
    ch07.check_confusion(confusion_loop, hidden=True)


def test_a_passing_check_returns_what_the_chapter_goes_on_with(monkeypatch, capsys):
    from ssast_teach.exercises import GRADING_ENV

    monkeypatch.delenv(GRADING_ENV)
    assert ch06.check_warmup_lr(warmup_ok) is warmup_ok
    assert ch07.check_average_precision(ap_ties) is ap_ties
    assert ch06.check_masked_forward_pass(forward_ok) is forward_ok
    assert ch06.check_pack_clips(pack_greedy) is None  # an extension: nothing later uses it
    assert ch07.check_real_token_mean(pool_ok) is None


# ------------------------------------------------------------------ stubs


def not_implemented(*args):
    raise NotImplementedError()


@pytest.mark.parametrize("check", [check for check, _ in CHECKS], ids=lambda c: c.__name__)
def test_a_stub_is_reported_as_not_implemented(check):
    with pytest.raises(ExerciseError, match="not implemented yet"):
        check(not_implemented)


@pytest.mark.parametrize("check", [check for check, _ in CHECKS], ids=lambda c: c.__name__)
def test_outside_grading_a_stub_goes_on_with_the_library(check, monkeypatch, capsys):
    from ssast_teach.exercises import GRADING_ENV

    monkeypatch.delenv(GRADING_ENV)
    result = check(not_implemented)
    out = capsys.readouterr().out
    assert "not implemented yet" in out
    if check in (ch06.check_pretrain_loop, ch06.check_pack_clips, ch07.check_real_token_mean):
        assert result is None
    else:
        assert callable(result) and result.__name__.startswith("_")
        assert "goes on with the library's version" in out
    with pytest.raises(ExerciseError, match="not implemented yet"):  # hidden cases fail a stub
        check(not_implemented, hidden=True)


# ------------------------------------------------------------------ hidden cases


@pytest.mark.parametrize(
    "cases",
    [
        lambda: ch06._warmup_settings(True),
        lambda: ch06._pass_specs(True),
        lambda: ch06._joint_specs(True),
        lambda: repr(ch06._loop_config(True)),
        lambda: [case for case, *_ in ch06._fold_cases(True)] + [
            str(grid) for _, grid, *_ in ch06._fold_specs(True)],
        lambda: ch06._pack_cases(True),
        lambda: [(case, s.tolist(), y.tolist()) for case, s, y in ch07._ap_cases(True)],
        lambda: [(case, s.tolist()) for case, s, _ in ch07._confusion_cases(True)],
        lambda: [(case, t.tolist(), n.tolist()) for case, t, n in ch07._pool_cases(True)],
    ],
    ids=["warmup", "forward", "joint", "loop", "fold", "pack", "ap", "confusion", "pool"],
)
def test_hidden_cases_follow_the_grader_seed(cases, monkeypatch):
    monkeypatch.delenv(GRADER_SEED_ENV, raising=False)
    default = cases()
    monkeypatch.setenv(GRADER_SEED_ENV, "12345")
    assert cases() != default
    assert cases() == cases()  # a seed gives the same cases every time


def test_probe_hidden_case_follows_the_grader_seed(monkeypatch, capsys):
    seen = []
    real = ch07._probe_model
    monkeypatch.setattr(ch07, "_probe_model", lambda seed, tdim: seen.append(seed) or real(seed, tdim))
    for seed in ("1", "2"):
        monkeypatch.setenv(GRADER_SEED_ENV, seed)
        ch07.check_linear_probe(probe_ok, hidden=True)
    assert seen == [721, 1, 721, 2]


# ------------------------------------------------------------------ wrong answers named


@pytest.mark.parametrize(
    ("wrong", "hint"),
    [
        (lambda s, b, w, e: (s + 1) / w * b, r"\(step \+ 1\)"),
        (lambda s, b, w, e: s / w * b if s <= w else None, "leaves the lr alone"),
        (lambda s, b, w, e: min(s / w, 1.0) * b if s % e == 0 else None, "no longer touches"),
        (lambda s, b, w, e: None, "sets lr = step / warmup_steps"),
    ],
    ids=["step+1", "every step", "after warm-up", "never"],
)
def test_warmup_mistakes(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        ch06.check_warmup_lr(wrong)


@pytest.mark.parametrize(
    ("wrong", "hint"),
    [
        (lambda m, x, a, b: m.mpc(x, a)[1] + 10 * m.mpg(x, a), "one mask for both"),
        (lambda m, x, a, b: m.mpc(x, b)[1] + 10 * m.mpg(x, a), "swapped"),
        (lambda m, x, a, b: m.mpc(x, a)[1] + m.mpg(x, b), "a weight of 1"),
        (lambda m, x, a, b: 10 * m.mpc(x, a)[1] + m.mpg(x, b), "on nce instead"),
        (lambda m, x, a, b: (m.mpc(x, a)[1] + 10 * m.mpg(x, b)) / 2, "mean of the two"),
        (lambda m, x, a, b: m.mpc(x, a)[1], "only the nce"),
        (lambda m, x, a, b: (m.mpc(x, a)[1] + 10 * m.mpg(x, b)).detach(), "without a graph"),
    ],
    ids=["one mask", "swapped", "weight 1", "weight on nce", "mean", "nce only", "detached"],
)
def test_joint_loss_mistakes(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        ch06.check_joint_step_loss(wrong)


@pytest.mark.parametrize(
    ("mistake", "hint"),
    [
        ("after pos", "after the positional embedding was added"),
        ("added", "added to the masked patches' embeddings instead of replacing"),
        ("no offset", "sit cls_token_num rows further on"),
        ("offset 1", "two class tokens"),
        ("sorted", "sorted order of mask_ids"),
        ("no norm", "skip the final norm"),
        ("no pos", "positional embedding is missing"),
        ("every token", "heads ran over every patch token"),
        ("swapped heads", "heads are swapped"),
        ("paper softmax", "paper's softmax dimension"),
    ],
)
def test_masked_forward_mistakes(mistake, hint):
    with pytest.raises(ExerciseError, match=hint):
        ch06.check_masked_forward_pass(lambda m, x, ids: forward_ok(m, x, ids, mistake))


def test_masked_forward_refuses_shortcuts_and_every_token_outputs():
    with pytest.raises(ExerciseError, match="model.mpc is what this exercise writes"):
        ch06.check_masked_forward_pass(
            lambda m, x, ids: (None, *m.mpc(x, ids), None))
    with pytest.raises(ExerciseError, match="every token's output"):
        ch06.check_masked_forward_pass(
            lambda m, x, ids: (m.v.patch_embed(to_image(x)), *forward_ok(m, x, ids)[1:]))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mistake", "hint"),
    [
        ("lr after step", "set after optimizer.step"),
        ("no warm-up", "never applied"),
        ("fresh generator per mask", "one mask for both objectives"),
        ("one generator", "one generator for the whole run"),
        ("from 1", "counted from 1"),
        ("on the loss", "stepped on the training loss"),
        ("min mode", "mode 'min'"),
        ("early eval", "one step early"),
        ("no zero_grad", "zero_grad is missing"),
        ("adam defaults", "default betas"),
        ("weight 1", "weighs the mse by 1"),
    ],
)
def test_pretrain_loop_mistakes(mistake, hint):
    with pytest.raises(ExerciseError, match=hint):
        ch06.check_pretrain_loop(lambda m, c, b, e: loop_ok(m, c, b, e, mistake))


def test_the_forward_and_loop_arguments_pickle():
    """A grader may run the submission in another process: what the checks pass must pickle."""
    ch06.check_masked_forward_pass(lambda m, x, ids: forward_ok(*pickle.loads(pickle.dumps((m, x, ids)))))

    def loop_in_a_copy(model, config, batches, evaluate):
        model_copy, *rest = pickle.loads(pickle.dumps((model, config, batches, evaluate)))
        losses = loop_ok(model_copy, *rest)
        model.load_state_dict(model_copy.state_dict())
        return losses

    ch06.check_pretrain_loop(loop_in_a_copy)


def test_pretrain_loop_wants_the_step_losses():
    with pytest.raises(ExerciseError, match="expected a list of the step losses"):
        ch06.check_pretrain_loop(lambda m, c, b, e: None)
    with pytest.raises(ExerciseError, match="15 losses where the run has 18 steps"):
        ch06.check_pretrain_loop(lambda m, c, b, e: loop_ok(m, c, b[:15], e))


def scatter_at(patches, ids, pred):
    return patches.scatter(1, ids.unsqueeze(-1).expand(-1, -1, patches.shape[-1]), pred)


@pytest.mark.parametrize(
    ("wrong", "hint"),
    [
        (lambda pred, patches, ids, grid: fold_patches(patches, grid), "still hold the original"),
        (lambda pred, patches, ids, grid: fold_patches(
            torch.cat([pred, patches[:, pred.shape[1]:]], 1), grid), "first M patches"),
        (lambda pred, patches, ids, grid: fold_patches(
            scatter_at(patches, ids[:1].expand_as(ids), pred), grid), "first clip's mask_ids"),
        (lambda pred, patches, ids, grid: fold_patches(
            scatter_at(patches, ids.sort(1).values, pred), grid), "k-th smallest"),
    ],
    ids=["not filled", "first M", "first clip's ids", "sorted ids"],
)
def test_fill_and_fold_mistakes(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        ch06.check_fill_and_fold(wrong)


def test_fill_and_fold_must_leave_the_callers_patches_alone():
    def in_place(pred, patches, ids, grid):
        return fold_patches(
            patches.scatter_(1, ids.unsqueeze(-1).expand(-1, -1, patches.shape[-1]), pred), grid)

    with pytest.raises(ExerciseError, match="changed the caller's patches"):
        ch06.check_fill_and_fold(in_place)


def pack_strict(lengths, target):  # a pack closes only once it holds MORE than target frames
    groups, pack, filled = [], [], 0
    for i, n in enumerate(lengths):
        if n >= target:
            groups.append([i])
            continue
        pack.append(i)
        filled += n
        if filled > target:
            groups.append(pack)
            pack, filled = [], 0
    return groups + ([pack] if pack else [])


def pack_never_cut(lengths, target):  # bin packing: never cut a clip, so inputs are padded
    groups, pack, filled = [], [], 0
    for i, n in enumerate(lengths):
        if pack and filled + n > target:
            groups.append(pack)
            pack, filled = [], 0
        pack.append(i)
        filled += n
    return groups + ([pack] if pack else [])


def pack_carry_tail(lengths, target):  # the cut tail of the last clip starts the next input
    groups, pack, filled = [], [], 0
    for i, n in enumerate(lengths):
        pack.append(i)
        filled += n
        while filled >= target:
            groups.append(pack)
            filled -= target
            pack = [i] if filled else []
    return groups + ([pack] if pack else [])


@pytest.mark.parametrize(
    ("wrong", "hint"),
    [
        (lambda lengths, target: [[i] for i in range(len(lengths))], "padded"),
        (lambda lengths, target: pack_greedy(lengths, target)[:-1], "in no input"),
        (pack_strict, "wasted"),
        (pack_never_cut, "padded|fills an input alone"),
        (pack_carry_tail, "again in input"),
        (lambda lengths, target: [list(range(len(lengths)))] if lengths else [], "alone|wasted"),
        (lambda lengths, target: [[i] for i in range(len(lengths))] + [[]], "empty"),
        (lambda lengths, target: tuple(range(len(lengths))), "list of lists"),
    ],
    ids=["one clip each", "last pack dropped", "strict >", "never cut", "carry the tail",
         "all in one", "empty input", "flat"],
)
def test_pack_mistakes(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        ch06.check_pack_clips(wrong)


def ap_naive(scores, labels):  # ties in whatever order argsort leaves them
    hits = labels[scores.argsort(descending=True)]
    precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / hits.sum())


def ap_sort_order(key):
    def ap(scores, labels):
        by_key = key(scores, labels).argsort(descending=True, stable=True)
        order = by_key[scores[by_key].argsort(descending=True, stable=True)]
        hits = labels[order]
        return float((hits.cumsum(0) / torch.arange(1, len(hits) + 1) * hits).sum() / hits.sum())

    return ap


@pytest.mark.parametrize(
    ("wrong", "hint"),
    [
        (ap_naive, "ranked one by one"),
        (ap_sort_order(lambda s, y: -torch.arange(len(s), dtype=torch.float)), "ranked one by one"),
        (ap_sort_order(lambda s, y: y), "ranked one by one"),  # positives first: optimistic
        (ap_sort_order(lambda s, y: -y), "ranked one by one"),  # negatives first: pessimistic
        (lambda s, y: average_precision(-s, y), "lowest score up"),
        (lambda s, y: float((y[s.argsort(descending=True)].cumsum(0)
                             / torch.arange(1, len(s) + 1)).mean()), "every rank"),
        (lambda s, y: float((y[s.argsort(descending=True)].cumsum(0) / torch.arange(1, len(s) + 1)
                             * y[s.argsort(descending=True)]).sum() / len(s)), "number of clips"),
        (lambda s, y: "0.5", "expected a number"),
    ],
    ids=["argsort ties", "ties reversed", "positives first", "negatives first", "lowest up",
         "every rank", "divided by N", "a string"],
)
def test_average_precision_mistakes(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        ch07.check_average_precision(wrong)


@pytest.mark.parametrize(
    ("wrong", "hint"),
    [
        (lambda s, t: confusion_matrix(s, t).T, "swapped"),
        (lambda s, t: confusion_matrix(s, t).float(), "dtype"),
        (lambda s, t: torch.bincount(t.argmax(1) * s.shape[1] + s.argmax(1)).view(
            s.shape[1], s.shape[1]), "minlength"),
    ],
    ids=["transposed", "float", "no minlength"],
)
def test_confusion_mistakes(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        ch07.check_confusion(wrong)


def test_linear_probe_mistakes():
    def freeze_all(model):
        for p in model.parameters():
            p.requires_grad_(False)
        return [p for n, p in model.named_parameters() if n.startswith("mlp_head.")]

    with pytest.raises(ExerciseError, match="frozen but must train"):
        ch07.check_linear_probe(freeze_all)

    def head_linear_only(model):
        for n, p in model.named_parameters():
            p.requires_grad_(n.startswith("mlp_head.1."))
        return [p for n, p in model.named_parameters() if n.startswith("mlp_head.1.")]

    with pytest.raises(ExerciseError, match="LayerNorm"):
        ch07.check_linear_probe(head_linear_only)

    with pytest.raises(ExerciseError, match="encoder parameters still train"):
        ch07.check_linear_probe(lambda model: list(model.mlp_head.parameters()))

    def zeroes_too(model):
        heads = probe_ok(model)
        with torch.no_grad():
            model.v.pos_embed.zero_()
        return heads

    with pytest.raises(ExerciseError, match="values changed"):
        ch07.check_linear_probe(zeroes_too)

    def copies(model):
        return [p.detach().clone().requires_grad_() for p in probe_ok(model)]

    with pytest.raises(ExerciseError, match="not copies"):
        ch07.check_linear_probe(copies)


def pool_masked(tokens, n_real, off=0):
    keep = (torch.arange(tokens.shape[1]) < (n_real[:, None] + off).clamp(1)).unsqueeze(-1)
    return (tokens * keep).sum(1) / keep.sum(1)


@pytest.mark.parametrize(
    ("wrong", "hint"),
    [
        (lambda t, n: t.mean(1), "official ft_avgtok"),
        (lambda t, n: pool_masked(t, n) * n[:, None] / t.shape[1], "divided by N"),
        (lambda t, n: t[:, : int(n[0])].mean(1), "first clip's n_real"),
        (lambda t, n: pool_masked(t, n, -1), "off-by-one"),
        (lambda t, n: pool_masked(t, n, 1), "off-by-one"),
        (lambda t, n: t[:, :8].mean(1) if t.shape[1] > 8 else pool_masked(t, n), "padding"),
        (lambda t, n: pool_masked(t, n).double(), "dtype"),
    ],
    ids=["all tokens", "divided by N", "one length", "n-1", "n+1", "first 8 tokens",
         "float64"],
)
def test_pooling_mistakes(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        ch07.check_real_token_mean(wrong)
