"""Chapter 04, model: the SSAST encoder, its pretraining heads and its fine-tuning head.

One class, :class:`SSASTModel`, in one of two modes with the official parameter layout:

* pretraining (``SSASTModel.for_pretraining``): ``p_input_fdim, p_input_tdim, mask_embed, v,
  cpredlayer, gpredlayer``; ``mpc`` and ``mpg`` compute the two objectives of chapter 05;
* fine-tuning (``SSASTModel.for_finetuning``): ``v, mlp_head``; ``forward`` gives logits.

``v`` is a timm DeiT whose image patch embedding is replaced by a 1-channel ``Conv2d`` over the
spectrogram and whose positional embedding is re-made for the patch grid. The token path is
``[cls, dist, patch_1..patch_N] + pos_embed -> pos_drop -> blocks -> norm``; it is written once,
in :meth:`SSASTModel._encode`, and every entry point goes through it (timm's own ``forward``,
which checks image sizes, is never called).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssast_teach.losses import info_nce_loss, mse_loss
from ssast_teach.patches import PatchEmbed, PatchGrid, to_image, unfold_patches


@dataclass(frozen=True)
class ModelSize:
    """A backbone: the timm constructor and the sizes passed to it."""

    timm_name: str
    embed_dim: int
    num_heads: int
    depth: int
    cls_token_num: int  # 2 for distilled DeiT (cls + dist), 1 otherwise


MODEL_SIZES: dict[str, ModelSize] = {
    "tiny": ModelSize("deit_tiny_distilled_patch16_224", 192, 3, 12, 2),
    "small": ModelSize("deit_small_distilled_patch16_224", 384, 6, 12, 2),
    "base": ModelSize("deit_base_distilled_patch16_384", 768, 12, 12, 2),
    "base_nokd": ModelSize("deit_base_patch16_384", 768, 12, 12, 1),
    # Not official: the same distilled DeiT, small enough to pretrain on a laptop CPU.
    "mini": ModelSize("deit_tiny_distilled_patch16_224", 64, 4, 4, 2),
}

POOLINGS = ("avgtok", "cls")  # official ft_avgtok (default) and ft_cls
TASKS = ("ft_avgtok", "ft_cls", "pretrain_mpc", "pretrain_mpg")  # official task names
ATTENTIONS = ("fused", "explicit")  # SSASTModel.attention


@dataclass(frozen=True)
class SSASTConfig:
    """Model size and patch geometry; defaults are the official base patch-model pretraining."""

    size: str = "base"
    fshape: int = 16
    tshape: int = 16
    fstride: int = 16
    tstride: int = 16
    input_fdim: int = 128
    input_tdim: int = 1024

    def __post_init__(self) -> None:
        if self.size not in MODEL_SIZES:
            raise ValueError(f"size={self.size!r} is not one of {', '.join(MODEL_SIZES)}")
        _ = self.grid  # validates the geometry now rather than at first use

    @property
    def grid(self) -> PatchGrid:
        return PatchGrid(
            self.input_fdim, self.input_tdim, self.fshape, self.tshape, self.fstride, self.tstride
        )

    @property
    def spec(self) -> ModelSize:
        return MODEL_SIZES[self.size]


def build_backbone(spec: ModelSize, grid: PatchGrid) -> nn.Module:
    """A timm DeiT re-made for spectrograms: 1-channel patch embedding, new positional embedding."""
    v = timm.create_model(
        spec.timm_name,
        pretrained=False,
        embed_dim=spec.embed_dim,
        depth=spec.depth,
        num_heads=spec.num_heads,
    )
    v.patch_embed = PatchEmbed(grid, spec.embed_dim)
    # Assigning to an existing parameter name keeps its place in the state-dict order.
    v.pos_embed = nn.Parameter(
        torch.zeros(1, grid.num_patches + spec.cls_token_num, spec.embed_dim)
    )
    nn.init.trunc_normal_(v.pos_embed, std=0.02)
    return v


def prediction_head(embed_dim: int, patch_dim: int) -> nn.Sequential:
    """``cpredlayer``/``gpredlayer``: Linear(D, D) -> ReLU -> Linear(D, fshape*tshape).

    The official code hard-codes 256 outputs, which is fshape*tshape for both 16x16 and 128x2.
    """
    return nn.Sequential(
        nn.Linear(embed_dim, embed_dim), nn.ReLU(), nn.Linear(embed_dim, patch_dim)
    )


def adapt_pos_embed(
    pos_embed: Tensor,
    cls_token_num: int,
    p_f_dim: int,
    p_t_dim: int,
    f_dim: int,
    t_dim: int,
    *,
    pos_embed_quirk: bool = True,
) -> Tensor:
    """Fit a pretrained positional embedding to a new patch grid, as the official fine-tuning.

    ``(1, C + p_f_dim*p_t_dim, D) -> (1, C + f_dim*t_dim, D)``; the ``C`` class-token rows are
    kept. The patch rows become a ``(1, D, p_f_dim, p_t_dim)`` image, then

    * time: fewer columns -> centre crop ``[p_t//2 - t//2 : p_t//2 - t//2 + t]``; otherwise
      bilinear interpolation to ``(8, t)`` (``(p_f, t)`` with ``pos_embed_quirk=False``);
    * frequency: fewer rows -> crop ``[p_f//2 - f//2 : p_f//2 - f//2 + t]`` (``+ f`` with
      ``pos_embed_quirk=False``); otherwise bilinear interpolation to ``(f, t)``.

    With the quirks the frequency crop gives ``f`` rows only when ``t == f``, as in the
    official code (which then fails in a reshape); here that case is a ValueError.
    """
    c, n_old = cls_token_num, p_f_dim * p_t_dim
    if pos_embed.dim() != 3 or pos_embed.shape[:2] != (1, c + n_old):
        raise ValueError(
            f"adapt_pos_embed: pos_embed must be (1, cls_token_num + p_f_dim*p_t_dim = {c + n_old}"
            f", D), got {tuple(pos_embed.shape)}"
        )
    d = pos_embed.shape[2]
    grid = pos_embed[:, c:].transpose(1, 2).reshape(1, d, p_f_dim, p_t_dim)  # (1, D, p_f, p_t)
    if t_dim < p_t_dim:
        start = p_t_dim // 2 - t_dim // 2
        grid = grid[:, :, :, start : start + t_dim]  # (1, D, p_f, t)
    else:
        # Official quirk: the time interpolation hard-codes 8 frequency rows (8 = p_f for 16x16
        # patches on 128 bins, so only other geometries notice).
        rows = 8 if pos_embed_quirk else grid.shape[2]
        grid = F.interpolate(grid, size=(rows, t_dim), mode="bilinear")  # (1, D, 8, t)
    if f_dim < p_f_dim:
        start = p_f_dim // 2 - f_dim // 2
        # Official quirk: the frequency crop ends at start + t_dim, not start + f_dim.
        grid = grid[:, :, start : start + (t_dim if pos_embed_quirk else f_dim), :]
    else:
        grid = F.interpolate(grid, size=(f_dim, t_dim), mode="bilinear")  # (1, D, f, t)
    if tuple(grid.shape[2:]) != (f_dim, t_dim):
        raise ValueError(
            f"adapt_pos_embed: the official crop/interpolation gives a {tuple(grid.shape[2:])} grid"
            f", not (f_dim={f_dim}, t_dim={t_dim}) (the official code fails here too); pass "
            "pos_embed_quirk=False for the corrected crop"
        )
    patches = grid.reshape(1, d, f_dim * t_dim).transpose(1, 2)  # (1, f*t, D)
    return torch.cat([pos_embed[:, :c], patches], dim=1)  # (1, C + f*t, D)


def official_strides(fshape: int, tshape: int) -> tuple[int, int]:
    """The official fine-tuning strides: 10x10 for 16x16 patches, 128x1 for 128x2 frames."""
    if (fshape, tshape) == (16, 16):
        return 10, 10
    if fshape == 128:
        return 128, 1
    return fshape, tshape  # no official recipe: no overlap


def attention_for(device: torch.device | str, precision: str) -> str:
    """The faster attention kernel for a run: ``"explicit"`` for bf16 on a CPU, else ``"fused"``.

    Measured by ``python -m ssast_teach.bench``: the CPU kernels of
    ``F.scaled_dot_product_attention`` gain nothing from bf16, where the explicit form runs
    about 2x faster; everywhere else the fused kernel wins.
    """
    return "explicit" if torch.device(device).type == "cpu" and precision == "bf16" else "fused"


def strip_module_prefix(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop the ``module.`` that ``torch.nn.DataParallel`` puts before every key."""
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def infer_size(state_dict: Mapping[str, Tensor]) -> str:
    embed_dim = state_dict["v.patch_embed.proj.weight"].shape[0]
    blocks = {m.group(1) for k in state_dict if (m := re.match(r"v\.blocks\.(\d+)\.", k))}
    cls_token_num = 2 if "v.dist_token" in state_dict else 1
    found = (embed_dim, len(blocks), cls_token_num)
    for name, spec in MODEL_SIZES.items():
        if (spec.embed_dim, spec.depth, spec.cls_token_num) == found:
            return name
    raise ValueError(
        f"state dict has embed_dim={embed_dim}, depth={len(blocks)}, "
        f"cls_token_num={cls_token_num}, which matches no entry of MODEL_SIZES; pass size="
    )


def load_strict(model: nn.Module, state_dict: Mapping[str, Tensor]) -> None:
    """``load_state_dict`` that refuses any partial load, with a ValueError listing why."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        kind = "pretraining" if getattr(model, "pretraining", True) else "fine-tuning"
        raise ValueError(
            f"state dict does not fit this SSAST {kind} model: "
            f"missing keys {missing}; unexpected keys {unexpected}; shape mismatches {mismatched}"
        )
    model.load_state_dict(state_dict, strict=True)


class SSASTModel(nn.Module):
    """SSAST: pretraining mode when ``n_classes`` is None, fine-tuning mode otherwise.

    ``backbone`` lets a caller hand in a ready ``v`` (``for_finetuning`` does); it must already
    fit ``config``'s patch grid. Grid, config and pooling are plain attributes, so the
    state dict holds exactly the official keys.

    ``attention`` (one of :data:`ATTENTIONS`) is the attention kernel of every block, set once
    (assigning it sets each timm block's ``attn.fused_attn``): ``"fused"`` (default) is timm's
    ``F.scaled_dot_product_attention``; ``"explicit"`` is ``softmax(q k^T * scale) @ v`` as
    timm 0.4.5 (the official code) computes it. The trainers set it once per run with
    :func:`attention_for` (explicit for bf16 on a CPU, where it runs about 2x faster).
    """

    def __init__(
        self,
        config: SSASTConfig,
        n_classes: int | None = None,
        pooling: str = "avgtok",
        *,
        backbone: nn.Module | None = None,
    ) -> None:
        super().__init__()
        spec, grid = config.spec, config.grid
        self.config, self.grid = config, grid
        self.cls_token_num = spec.cls_token_num
        self.pretraining = n_classes is None
        self.n_classes = n_classes
        if pooling not in POOLINGS:
            raise ValueError(f"pooling={pooling!r} is not one of {', '.join(POOLINGS)}")
        self.pooling = pooling
        d = spec.embed_dim
        if self.pretraining:
            if (config.fstride, config.tstride) != (config.fshape, config.tshape):
                raise ValueError(
                    f"fstride={config.fstride}, tstride={config.tstride} differ from fshape="
                    f"{config.fshape}, tshape={config.tshape}: they must be the same at the "
                    "pretraining stage (patch split overlapping is not supported)"
                )
            # Official trick: the pretraining input size rides in the state dict as frozen
            # 0-d int64 parameters, so a checkpoint says how its pos_embed grid was made.
            self.p_input_fdim = nn.Parameter(torch.tensor(config.input_fdim), requires_grad=False)
            self.p_input_tdim = nn.Parameter(torch.tensor(config.input_tdim), requires_grad=False)
            self.mask_embed = nn.Parameter(nn.init.xavier_normal_(torch.empty(1, 1, d)))
        elif isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 1:
            raise ValueError(f"n_classes must be a positive int, got {n_classes!r}")
        self.v = build_backbone(spec, grid) if backbone is None else backbone
        expected = (1, grid.num_patches + self.cls_token_num, d)
        if (
            tuple(self.v.pos_embed.shape) != expected
            or getattr(self.v.patch_embed, "grid", None) != grid
        ):
            raise ValueError(
                f"backbone does not fit the patch grid {grid}: expected pos_embed {expected}, "
                f"got {tuple(self.v.pos_embed.shape)}"
            )
        if self.pretraining:
            self.cpredlayer = prediction_head(d, grid.patch_dim)
            self.gpredlayer = prediction_head(d, grid.patch_dim)
        else:
            self.mlp_head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, n_classes))
        self.attention = "fused"

    @property
    def attention(self) -> str:
        return "fused" if self.v.blocks[0].attn.fused_attn else "explicit"

    @attention.setter
    def attention(self, kernel: str) -> None:
        if kernel not in ATTENTIONS:
            raise ValueError(f"attention={kernel!r} is not one of {', '.join(ATTENTIONS)}")
        for blk in self.v.blocks:
            blk.attn.fused_attn = kernel == "fused"

    # ----------------------------------------------------------------- constructors
    @classmethod
    def for_pretraining(
        cls,
        size: str = "base",
        fshape: int = 16,
        tshape: int = 16,
        input_fdim: int = 128,
        input_tdim: int = 1024,
        fstride: int | None = None,
        tstride: int | None = None,
    ) -> SSASTModel:
        """A fresh pretraining model; strides default to the patch shape (no overlap)."""
        config = SSASTConfig(
            size=size,
            fshape=fshape,
            tshape=tshape,
            fstride=fshape if fstride is None else fstride,
            tstride=tshape if tstride is None else tstride,
            input_fdim=input_fdim,
            input_tdim=input_tdim,
        )
        return cls(config)

    @classmethod
    def from_pretrained_state_dict(
        cls, state_dict: Mapping[str, Tensor], size: str | None = None
    ) -> SSASTModel:
        """The pretraining model of a checkpoint (``module.`` prefix or not), loaded strictly.

        Size, patch shape and pretraining input size are read from the tensors:
        ``v.patch_embed.proj.weight`` is ``(D, 1, fshape, tshape)``; ``p_input_fdim``/``tdim``.
        """
        sd = strip_module_prefix(state_dict)
        for key in ("v.patch_embed.proj.weight", "p_input_fdim", "p_input_tdim"):
            if key not in sd:
                raise ValueError(
                    f"pretrained state dict has no {key!r} (with or without 'module.'): it is not "
                    "an SSAST pretraining checkpoint"
                )
        _, _, fshape, tshape = sd["v.patch_embed.proj.weight"].shape
        config = SSASTConfig(
            size=infer_size(sd) if size is None else size,
            fshape=fshape,
            tshape=tshape,
            fstride=fshape,
            tstride=tshape,
            input_fdim=int(sd["p_input_fdim"].item()),
            input_tdim=int(sd["p_input_tdim"].item()),
        )
        model = cls(config)
        load_strict(model, sd)
        return model

    @classmethod
    def for_finetuning(
        cls,
        pretrained: SSASTModel | Mapping[str, Tensor],
        *,
        n_classes: int,
        fstride: int | None = None,
        tstride: int | None = None,
        input_fdim: int = 128,
        input_tdim: int | None = None,
        pooling: str = "avgtok",
        size: str | None = None,
        pos_embed_quirk: bool = True,
    ) -> SSASTModel:
        """THE fine-tuning model builder: a pretraining model or state dict, adapted as the
        official code does, with a new ``n_classes`` head. Every other way to get a classifier
        (``checkpoints.load_for_finetuning``, the ``finetune`` trainer) ends here.

        The pretrained encoder is kept (copied: ``pretrained`` is left as it was); the patch
        embedding gets the new stride with the pretrained weight and bias; the positional
        embedding goes through :func:`adapt_pos_embed`; ``mlp_head`` is new. The patch shape is
        the checkpoint's; strides default to :func:`official_strides`, ``input_tdim`` to the
        pretraining input length. ``size`` names the model size when the tensors cannot (a
        size outside :data:`MODEL_SIZES` with the same widths).
        """
        sd = pretrained.state_dict() if isinstance(pretrained, nn.Module) else pretrained
        pre = cls.from_pretrained_state_dict(sd, size=size)
        p = pre.config
        default_fs, default_ts = official_strides(p.fshape, p.tshape)
        config = SSASTConfig(
            p.size, p.fshape, p.tshape,
            fstride=default_fs if fstride is None else fstride,
            tstride=default_ts if tstride is None else tstride,
            input_fdim=input_fdim,
            input_tdim=p.input_tdim if input_tdim is None else input_tdim,
        )
        grid, p_grid, v = config.grid, pre.grid, pre.v
        patch_embed = PatchEmbed(grid, p.spec.embed_dim)
        patch_embed.proj.load_state_dict(v.patch_embed.proj.state_dict())
        v.patch_embed = patch_embed
        pos = adapt_pos_embed(
            v.pos_embed.detach(),
            pre.cls_token_num,
            p_grid.f_dim,
            p_grid.t_dim,
            grid.f_dim,
            grid.t_dim,
            pos_embed_quirk=pos_embed_quirk,
        )
        v.pos_embed = nn.Parameter(pos)
        return cls(config, n_classes=n_classes, pooling=pooling, backbone=v)

    # ----------------------------------------------------------------- the token path
    def _check_input(self, x: Tensor) -> None:
        expected = (self.grid.input_tdim, self.grid.input_fdim)
        if x.dim() != 3 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"x must be (B, input_tdim={expected[0]}, input_fdim={expected[1]}), "
                f"got shape {tuple(x.shape)}"
            )

    def _sequence(self, patch_tokens: Tensor) -> Tensor:
        """``(B, N, D)`` patch tokens -> ``(B, C + N, D)`` with class tokens and positions."""
        b = patch_tokens.shape[0]
        prefix = (
            (self.v.cls_token, self.v.dist_token)
            if self.cls_token_num == 2
            else (self.v.cls_token,)
        )
        x = torch.cat([t.expand(b, -1, -1) for t in prefix] + [patch_tokens], dim=1)
        # timm 1.x's patch_drop and norm_pre are Identity here and absent from timm 0.4.5.
        return self.v.pos_drop(x + self.v.pos_embed)  # (B, C + N, D)

    def _encode(self, patch_tokens: Tensor, layer: int = -1) -> Tensor:
        """Tokens after block ``layer`` (python index); the final norm only after the last."""
        depth = len(self.v.blocks)
        if not -depth <= layer < depth:
            raise ValueError(f"layer={layer} is out of range for {depth} blocks")
        last = layer % depth
        x = self._sequence(patch_tokens)
        for blk in self.v.blocks[: last + 1]:
            x = blk(x)  # (B, C + N, D)
        return self.v.norm(x) if last == depth - 1 else x

    def tokens(self, x: Tensor, layer: int = -1) -> Tensor:
        """All output tokens ``(B, C + N, D)`` for ``(B, T, F)`` input, class tokens first."""
        self._check_input(x)
        return self._encode(self.v.patch_embed(to_image(x)), layer)

    def embed(self, x: Tensor, pooling: str = "avgtok", layer: int = -1) -> Tensor:
        """Clip or patch embeddings from block ``layer`` (default: the last, after the norm).

        ``avgtok``: mean of the patch tokens ``(B, D)``; ``cls``: mean of the class tokens
        ``(B, D)`` (the single one for ``base_nokd``); ``none``: patch tokens ``(B, N, D)``;
        ``grid``: patch tokens on the patch grid ``(B, f_dim, t_dim, D)``. Intermediate layers
        are the raw block outputs: the final norm belongs to the last block only.
        """
        h = self.tokens(x, layer)  # (B, C + N, D)
        c = self.cls_token_num
        if pooling == "avgtok":
            return h[:, c:].mean(dim=1)  # (B, D)
        if pooling == "cls":
            return h[:, :c].mean(dim=1)  # (B, D)
        if pooling == "none":
            return h[:, c:]  # (B, N, D)
        if pooling == "grid":
            return h[:, c:].unflatten(1, (self.grid.f_dim, self.grid.t_dim))  # (B, f, t, D)
        raise ValueError(f"pooling={pooling!r} is not one of avgtok, cls, none, grid")

    def forward(self, x: Tensor, task: str | None = None, mask_ids: Tensor | None = None):
        """Logits ``(B, n_classes)``; or, with an official ``task`` name, that task's output.

        ``task=None`` classifies with ``self.pooling``; ``ft_avgtok``/``ft_cls`` pick the pooling;
        ``pretrain_mpc``/``pretrain_mpg`` need ``mask_ids`` and return ``mpc``/``mpg``. Going
        through ``forward`` keeps DistributedDataParallel's gradient hooks in play.
        """
        if task in ("pretrain_mpc", "pretrain_mpg"):
            if mask_ids is None:
                raise ValueError(f"task={task!r} needs mask_ids")
            return self.mpc(x, mask_ids) if task == "pretrain_mpc" else self.mpg(x, mask_ids)
        if task is not None and task not in TASKS:
            raise ValueError(f"task={task!r} is not one of {', '.join(TASKS)}")
        if self.pretraining:
            raise ValueError(
                "this is a pretraining model: call mpc/mpg (or task='pretrain_mpc'/'pretrain_mpg')"
                ", or build a classifier with SSASTModel.for_finetuning"
            )
        pooling = self.pooling if task is None else task.removeprefix("ft_")
        return self.mlp_head(self.embed(x, pooling))  # (B, n_classes)

    # ----------------------------------------------------------------- pretraining
    def masked_outputs(self, x: Tensor, mask_ids: Tensor) -> tuple[Tensor, Tensor]:
        """Encode with ``mask_ids`` masked; return their outputs ``(B, M, D)``, targets ``(B, M, P)``."""
        if not self.pretraining:
            raise ValueError("mpc/mpg need a pretraining model (SSASTModel.for_pretraining)")
        self._check_input(x)
        b, n = x.shape[0], self.grid.num_patches
        if mask_ids.dim() != 2 or mask_ids.shape[0] != b or mask_ids.dtype != torch.long:
            raise ValueError(
                f"mask_ids must be a LongTensor (B={b}, M), got {mask_ids.dtype} "
                f"{tuple(mask_ids.shape)}"
            )
        mask_ids = mask_ids.to(x.device)
        if mask_ids.numel() and (mask_ids.min() < 0 or mask_ids.max() >= n):
            raise ValueError(f"mask_ids must lie in [0, num_patches={n})")
        image = to_image(x)  # (B, 1, F, T)
        targets = unfold_patches(image, self.grid).detach()  # (B, N, P)
        tokens = self.v.patch_embed(image)  # (B, N, D)
        masked = torch.zeros(b, n, 1, device=x.device, dtype=torch.bool)
        masked = masked.scatter(1, mask_ids.unsqueeze(-1), True)  # (B, N, 1)
        # The official dense blend tokens * keep + (1 - keep) * mask_embed gives these exact
        # values (x*1 + 0*m = x, x*0 + 1*m = m) through three (B, N, D) temporaries.
        tokens = torch.where(masked, self.mask_embed, tokens)  # (B, N, D)
        h = self._encode(tokens)  # (B, C + N, D)
        idx = (mask_ids + self.cls_token_num).unsqueeze(-1)  # (B, M, 1)
        h_masked = h.gather(1, idx.expand(-1, -1, h.shape[-1]))  # (B, M, D)
        target = targets.gather(1, mask_ids.unsqueeze(-1).expand(-1, -1, targets.shape[-1]))
        return h_masked, target  # (B, M, D), (B, M, P)

    def mpc(
        self, x: Tensor, mask_ids: Tensor, *, softmax_quirk: bool = True
    ) -> tuple[Tensor, Tensor]:
        """Masked patch classification: ``(acc, nce)`` for ``(B, T, F)`` input and ``(B, M)`` ids.

        Unlike the official code (which always prepends both cls and dist tokens, so it breaks
        for ``base_nokd``), the number of class tokens comes from the backbone.
        """
        h_masked, target = self.masked_outputs(x, mask_ids)
        return info_nce_loss(self.cpredlayer(h_masked), target, softmax_quirk=softmax_quirk)

    def mpg(self, x: Tensor, mask_ids: Tensor) -> Tensor:
        """Masked patch reconstruction: the MSE between ``gpredlayer`` outputs and the patches."""
        h_masked, target = self.masked_outputs(x, mask_ids)
        return mse_loss(self.gpredlayer(h_masked), target)

    # ----------------------------------------------------------------- inspection
    def attention_maps(self, x: Tensor) -> Tensor:
        """Attention weights ``(B, depth, heads, L, L)``, ``L = C + N``, recomputed per block.

        ``softmax(q k^T * head_dim^-0.5)`` from each block's own qkv weights; the normal forward
        keeps timm's fused attention, which never materialises these ``L x L`` matrices.
        Memory: ``B * depth * heads * L^2`` floats (about 150 MB per base clip at 1024 frames).
        """
        self._check_input(x)
        h = self._sequence(self.v.patch_embed(to_image(x)))  # (B, L, D)
        b, length, _ = h.shape
        maps = []
        for blk in self.v.blocks:
            attn = blk.attn
            qkv = attn.qkv(blk.norm1(h)).reshape(b, length, 3, attn.num_heads, attn.head_dim)
            q, k, _ = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, L, head_dim)
            q, k = attn.q_norm(q), attn.k_norm(k)
            maps.append(torch.softmax(q @ k.transpose(-2, -1) * attn.scale, dim=-1))
            h = blk(h)
        return torch.stack(maps, dim=1)  # (B, depth, heads, L, L)

    def num_params(self, trainable_only: bool = False) -> int:
        """Parameter count; the official count includes the two frozen ``p_input_*`` scalars."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def extra_repr(self) -> str:
        mode = "pretraining" if self.pretraining else f"fine-tuning, n_classes={self.n_classes}"
        return f"{mode}, size={self.config.size!r}, {self.grid}"
