"""Chapter 07's fine-tuning loop exercise: the right loop passes against finetune(), and each
named wrong answer is rejected with its message."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from ssast_teach.exercises import ExerciseError, ch07
from ssast_teach.training import warmup_lr


def make_loop(mistake: str | None = None):
    """The official loop (src/traintest.py train, src/run.py's final model), or one mistake."""

    def finetune_loop(model, config, batches, evaluate, val_ds):
        head = [p for n, p in model.named_parameters() if n.startswith("mlp_head.")]
        encoder = [p for n, p in model.named_parameters() if not n.startswith("mlp_head.")]
        head_lr = 1.0 if mistake == "head" else config.head_lr
        groups = [{"params": encoder, "lr": config.lr}, {"params": head, "lr": config.lr * head_lr}]
        if mistake == "frozen encoder":
            groups = groups[1:]
        betas = (0.9, 0.999) if mistake == "betas" else config.betas
        adam = torch.optim.AdamW if mistake == "adamw" else torch.optim.Adam
        optimizer = adam(groups, betas=betas, weight_decay=config.weight_decay)
        base_lrs = [g["lr"] for g in optimizer.param_groups]
        scheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, list(range(config.lrscheduler_start, 1000, config.lrscheduler_step)),
            gamma=config.lrscheduler_decay)
        warm = config.warmup and mistake != "no warm-up"

        def warm_up(step):
            factor = warmup_lr(step, 1.0, config.warmup_steps, config.warmup_every,
                               warmup_quirk=config.warmup_quirk) if warm else None
            if factor is not None:
                for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                    group["lr"] = factor * (config.lr if mistake == "flat warm-up" else base)

        step, losses = 0, []
        best_val, best_state, wa_sum, wa_count = -math.inf, None, None, 0
        for epoch in range(1, config.epochs + 1):
            for x, y in batches(epoch - 1 if mistake == "epochs from 0" else epoch):
                if mistake != "warm-up after":
                    warm_up(step)
                logits = model(x)  # (B, C)
                bce = config.loss == "BCE" if mistake != "always CE" else False
                reduction = "sum" if mistake == "sum" else "mean"
                if bce:
                    loss = nn.functional.binary_cross_entropy_with_logits(logits, y, reduction=reduction)
                else:
                    loss = nn.functional.cross_entropy(logits, y.argmax(1), reduction=reduction)
                if mistake != "no zero_grad":
                    optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if mistake == "warm-up after":
                    warm_up(step)
                step += 1
                losses.append(loss.item())
                if mistake == "scheduler per step":
                    scheduler.step()
            if val_ds is not None:
                score = evaluate(model, val_ds)[config.metrics]
                if score > best_val:
                    best_val = score
                    best_state = model.state_dict() if mistake == "no copy" else {
                        k: v.clone() for k, v in model.state_dict().items()}
            averaging = config.wa or (mistake == "wa always" and val_ds is not None)
            if averaging and mistake != "no wa" and config.wa_start <= epoch <= config.wa_end:
                sd = {k: v.double() for k, v in model.state_dict().items()}
                wa_sum = sd if wa_sum is None else {k: wa_sum[k] + sd[k] for k in sd}
                wa_count += 1
            if mistake not in ("scheduler per step", "scheduler never"):
                scheduler.step()
        if best_state is not None and mistake not in ("last epoch", "wa always"):
            model.load_state_dict(best_state)
        elif wa_count:
            model.load_state_dict({k: (v / wa_count).float() for k, v in wa_sum.items()})
        return model, losses

    return finetune_loop


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_official_loop_passes(capsys):
    ch07.check_finetune_loop(make_loop())
    out = capsys.readouterr().out
    assert "✓ ch07 exercise 4: your loop equals ssast_teach.finetune.finetune" in out


def test_the_official_loop_passes_the_hidden_cases(capsys, monkeypatch):
    monkeypatch.setenv("SSAST_TEACH_GRADER_SEED", "5")
    ch07.check_finetune_loop(make_loop(), hidden=True)
    assert "hidden seeds" in capsys.readouterr().out


def test_the_simulated_schedule_is_the_librarys(tmp_path):
    from ssast_teach.finetune import finetune

    for _, config in ch07._loop_cases(False, tmp_path):
        with ch07._quiet():
            _, history, _ = finetune(config, pretrained=ch07._start_weights(config),
                                     out_dir=tmp_path / "run")
        lrs = [row["lr"] for row in history.where("step")]
        assert [enc for enc, _ in ch07._lr_schedule(config, len(lrs) // config.epochs)] == lrs


@pytest.mark.parametrize(("mistake", "message"), [
    ("head", "the head's lr is not multiplied"),
    ("flat warm-up", "the head lost its head_lr multiplier"),
    ("no warm-up", "there is no warm-up"),
    ("warm-up after", "applied after the step"),
    ("scheduler per step", "stepped after every batch"),
    ("scheduler never", "never stepped"),
    ("betas", "betas (0.9, 0.999)"),
    ("adamw", "the optimiser is AdamW"),
    ("frozen encoder", "in no parameter group"),
    ("epochs from 0", "epochs count from 1"),
    ("always CE", "the loss is CE, but config.loss is 'BCE'"),
    ("sum", "summed over the batch"),
    ("no zero_grad", "gradients cleared before each backward"),
    ("last epoch", "they are the last epoch's; with a validation split"),
    ("no copy", "they are the last epoch's; with a validation split"),
    ("wa always", "a weight average; with a validation split"),
    ("no wa", "with config.wa the official averages"),
])
def test_named_wrong_answers(mistake, message):
    with pytest.raises(ExerciseError, match=re.escape(message)):
        ch07.check_finetune_loop(make_loop(mistake))


def test_a_stub_is_not_implemented(capsys):
    def stub(model, config, batches, evaluate, val_ds):
        raise NotImplementedError

    assert ch07.check_finetune_loop(stub) is None
    assert "not implemented yet" in capsys.readouterr().out
