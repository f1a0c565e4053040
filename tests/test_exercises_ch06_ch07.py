"""The chapter 06/07 checkers accept the library's answers and explain wrong ones."""

from __future__ import annotations

import pytest
import torch

from ssast_teach.exercises import ExerciseError, ch06, ch07
from ssast_teach.finetune import FinetuneConfig, average_precision, confusion_matrix, param_groups
from ssast_teach.patches import fold_patches
from ssast_teach.training import warmup_lr

# graded behaviour: a stub's check raises (tests/test_exercises_common.py covers the other)
pytestmark = pytest.mark.usefixtures("grading")

# ------------------------------------------------------------------ correct answers pass


def joint_ok(model, x, mask_a, mask_b):
    return model.mpc(x, mask_a)[1] + 10 * model.mpg(x, mask_b)


def fill_ok(pred, patches, mask_ids, grid):
    ids = mask_ids.unsqueeze(-1).expand(-1, -1, patches.shape[-1])
    return fold_patches(patches.scatter(1, ids, pred), grid)


def probe_ok(model):
    groups = param_groups(model, FinetuneConfig(linear_probe=True))
    return groups[0]["params"]


@pytest.mark.parametrize("hidden", [False, True])
def test_library_answers_pass(hidden, capsys):
    ch06.check_warmup_lr(warmup_lr, hidden=hidden)
    ch06.check_joint_step_loss(joint_ok, hidden=hidden)
    ch06.check_fill_and_fold(fill_ok, hidden=hidden)
    ch07.check_average_precision(average_precision, hidden=hidden)
    ch07.check_confusion(confusion_matrix, hidden=hidden)
    ch07.check_linear_probe(probe_ok, hidden=hidden)
    lines = capsys.readouterr().out.splitlines()
    expected = [f"✓ ch0{c} exercise {k}:" for c in (6, 7) for k in (1, 2, 3)]
    assert [line.split(":")[0] + ":" for line in lines] == expected


def test_written_out_answers_pass():
    def ap(scores, labels):  # the chapter's formula: mean precision at the positives' ranks
        hits = labels[scores.argsort(descending=True)]
        precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1)
        return (precision * hits).sum() / hits.sum()  # a 0-d tensor is accepted too

    def confusion(scores, targets):
        c = scores.shape[1]
        m = torch.zeros(c, c, dtype=torch.long)
        for t, p in zip(targets.argmax(1), scores.argmax(1), strict=True):
            m[t, p] += 1
        return m

    ch07.check_average_precision(ap, hidden=True)
    ch07.check_confusion(confusion, hidden=True)


# ------------------------------------------------------------------ wrong answers explained


def not_implemented(*args):
    raise NotImplementedError()


@pytest.mark.parametrize(
    "check",
    [
        ch06.check_warmup_lr,
        ch06.check_joint_step_loss,
        ch06.check_fill_and_fold,
        ch07.check_average_precision,
        ch07.check_confusion,
        ch07.check_linear_probe,
    ],
)
def test_not_implemented_is_reported(check):
    with pytest.raises(ExerciseError, match="not implemented yet"):
        check(not_implemented)


@pytest.mark.parametrize(
    ("wrong", "hint"),
    [
        (lambda s, b, w, e: (s + 1) / w * b, r"\(step \+ 1\)"),
        (lambda s, b, w, e: s / w * b if s <= w else None, "leaves the lr alone"),
        (lambda s, b, w, e: min(s / w, 1.0) * b if s % e == 0 else None, "no longer touches"),
        (lambda s, b, w, e: None, "sets lr = step / warmup_steps"),
    ],
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
        (lambda m, x, a, b: (m.mpc(x, a)[1] + 10 * m.mpg(x, b)).detach(), "without a graph"),
    ],
)
def test_joint_loss_mistakes(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        ch06.check_joint_step_loss(wrong)


def test_fill_and_fold_mistakes():
    with pytest.raises(ExerciseError, match="still hold the original"):
        ch06.check_fill_and_fold(lambda pred, patches, ids, grid: fold_patches(patches, grid))
    with pytest.raises(ExerciseError, match="first M patches"):
        ch06.check_fill_and_fold(
            lambda pred, patches, ids, grid: fold_patches(
                torch.cat([pred, patches[:, pred.shape[1]:]], 1), grid
            )
        )


def test_average_precision_mistakes():
    with pytest.raises(ExerciseError, match="lowest score up"):
        ch07.check_average_precision(lambda s, y: average_precision(-s, y))

    def every_rank(scores, labels):
        hits = labels[scores.argsort(descending=True)]
        return float((hits.cumsum(0) / torch.arange(1, len(hits) + 1)).mean())

    with pytest.raises(ExerciseError, match="every rank"):
        ch07.check_average_precision(every_rank)
    with pytest.raises(ExerciseError, match="expected a number"):
        ch07.check_average_precision(lambda s, y: "0.5")


def test_confusion_mistakes():
    with pytest.raises(ExerciseError, match="swapped"):
        ch07.check_confusion(lambda s, t: confusion_matrix(s, t).T)
    with pytest.raises(ExerciseError, match="dtype"):
        ch07.check_confusion(lambda s, t: confusion_matrix(s, t).float())


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
