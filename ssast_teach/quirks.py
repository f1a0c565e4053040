"""The official code's quirks, one table: where each lives, what the official code does, what
the corrected form does (chapters 03-07 measure them).

One convention everywhere: a quirk is switched by a boolean keyword whose ``True`` (the default)
is the official behaviour and ``False`` the corrected one, with the same name in the function,
the trainer's config field and the command line (``--correct NAME`` sets ``NAME_quirk=False``).
The masking quirks keep their descriptive names (``exclude_first``, ``wrap_rows``; ``keep`` is
a choice, ``"set_order"`` official), with the same rule: the default is the official behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["QUIRKS", "Quirk"]


@dataclass(frozen=True)
class Quirk:
    """One official quirk: the keyword that switches it, where, and the two behaviours."""

    keyword: str
    where: str
    official: str
    corrected: str


QUIRKS: tuple[Quirk, ...] = (
    Quirk("keep", "masking.cluster_mask", "keeps the first mask_patch collected ids in the "
          'Python set\'s iteration order (keep="set_order"): the lowest ids while the set\'s '
          "table has more slots than the largest id (400 of 512), slot order below (10 of 512)",
          'a uniform subset of the collected ids (keep="random")'),
    Quirk("exclude_first", "masking.cluster_mask", "id 0 is never masked",
          "id 0 can be masked"),
    Quirk("wrap_rows", "masking.cluster_mask", "a cluster past the row end wraps to the next "
          "frequency row", "the cluster stops at the row end"),
    Quirk("softmax_quirk", "losses.info_nce_loss, model.SSASTModel.mpc, pretrain",
          "softmax over the predictions for each target", "the paper's Eq. 1: softmax over the "
          "targets for each prediction (loss and accuracy)"),
    Quirk("warmup_quirk", "training.warmup_lr, pretrain, finetune", "lr = step/1000 * lr set "
          "every 50 steps: 0 for the first 50", "(step + 1)/warmup_steps * lr at every step"),
    Quirk("pos_embed_quirk", "model.adapt_pos_embed, model.SSASTModel.for_finetuning, "
          "checkpoints.load_for_finetuning, finetune", "time interpolation to 8 frequency rows; "
          "frequency crop ends at start + t_dim", "interpolation keeps the rows; the crop ends at "
          "start + f_dim"),
    Quirk("ce_target_quirk", "finetune", "CE on argmax(labels.long()): a two-class mix "
          "truncates to zeros and trains toward class 0", "CE on the mixed label distribution"),
    Quirk("valid_loss_quirk", "finetune", "validation loss on sigmoid(logits)",
          "validation loss on the logits"),
)
