"""Chapter 02, patches: cutting a spectrogram into the tokens that SSAST reads.

A patch is a ``fshape x tshape`` window of the ``(F, T)`` spectrogram; windows start every
``fstride`` bins and ``tstride`` frames. The model sees patches twice:

* as tokens, through :class:`PatchEmbed` (a ``Conv2d`` whose kernel is the patch), and
* as loss targets, through :func:`unfold_patches` (the raw ``fshape*tshape`` values).

Both number patches row-major: ``index = f_row * t_dim + t_col`` (frequency rows, time columns),
the order of ``Conv2d(...).flatten(2)`` and of ``torch.nn.Unfold``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class PatchGrid:
    """The patch geometry of one input size; defaults are the official patch-model pretraining.

    The frame model is ``PatchGrid(128, 1024, fshape=128, tshape=2, fstride=128, tstride=2)``.
    """

    input_fdim: int = 128  # mel bins
    input_tdim: int = 1024  # frames
    fshape: int = 16
    tshape: int = 16
    fstride: int = 16
    tstride: int = 16

    def __post_init__(self) -> None:
        for name in ("input_fdim", "input_tdim", "fshape", "tshape", "fstride", "tstride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"PatchGrid: {name} must be a positive int, got {value!r}")
        if self.fshape > self.input_fdim:
            raise ValueError(
                f"PatchGrid: fshape={self.fshape} is bigger than input_fdim={self.input_fdim}"
            )
        if self.tshape > self.input_tdim:
            raise ValueError(
                f"PatchGrid: tshape={self.tshape} is bigger than input_tdim={self.input_tdim}"
            )

    @property
    def f_dim(self) -> int:
        """Patch rows: the Conv2d output height ``(input_fdim - fshape) // fstride + 1``."""
        return (self.input_fdim - self.fshape) // self.fstride + 1

    @property
    def t_dim(self) -> int:
        """Patch columns: the Conv2d output width ``(input_tdim - tshape) // tstride + 1``."""
        return (self.input_tdim - self.tshape) // self.tstride + 1

    @property
    def num_patches(self) -> int:
        return self.f_dim * self.t_dim

    @property
    def patch_dim(self) -> int:
        """Values in one patch: the length of a loss target (256 for 16x16 and for 128x2)."""
        return self.fshape * self.tshape

    @property
    def overlapping(self) -> bool:
        return self.fstride < self.fshape or self.tstride < self.tshape


class PatchEmbed(nn.Module):
    """Linear patch embedding: a 1-channel ``Conv2d`` whose kernel and stride are the patch grid.

    It replaces timm's image ``PatchEmbed`` (3 channels, fixed 224/384 image size), as the
    official code does, so the state-dict key stays ``patch_embed.proj.*``.
    """

    def __init__(self, grid: PatchGrid, embed_dim: int) -> None:
        super().__init__()
        self.grid = grid
        self.proj = nn.Conv2d(
            1,
            embed_dim,
            kernel_size=(grid.fshape, grid.tshape),
            stride=(grid.fstride, grid.tstride),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, 1, F, T) -> (B, N, D)


def to_image(x: Tensor) -> Tensor:
    """``(B, T, F)`` fbank batch -> ``(B, 1, F, T)`` one-channel image, as the official forward."""
    if x.dim() != 3:
        raise ValueError(f"to_image: x must be (B, T, F), got shape {tuple(x.shape)}")
    return x.unsqueeze(1).transpose(2, 3)  # (B, 1, F, T)


def _check_image(x: Tensor, grid: PatchGrid, where: str) -> None:
    if x.dim() != 4 or x.shape[1] != 1 or tuple(x.shape[2:]) != (grid.input_fdim, grid.input_tdim):
        raise ValueError(
            f"{where}: x must be (B, 1, input_fdim={grid.input_fdim}, "
            f"input_tdim={grid.input_tdim}), got shape {tuple(x.shape)}"
        )


def unfold_patches(x: Tensor, grid: PatchGrid) -> Tensor:
    """Raw patch values, ``(B, 1, F, T) -> (B, N, fshape*tshape)``: the SSAST loss targets.

    Two ``Tensor.unfold`` calls make strided views (no copy until the reshape); the values and
    their order equal ``torch.nn.Unfold(kernel_size=(fshape, tshape), stride=(fstride,
    tstride))(x).transpose(1, 2)``: patch row-major over the grid, values row-major inside it.
    """
    _check_image(x, grid, "unfold_patches")
    windows = x[:, 0].unfold(1, grid.fshape, grid.fstride).unfold(2, grid.tshape, grid.tstride)
    # windows: (B, f_dim, t_dim, fshape, tshape)
    return windows.reshape(x.shape[0], grid.num_patches, grid.patch_dim)  # (B, N, P)


def fold_patches(patches: Tensor, grid: PatchGrid) -> Tensor:
    """Put patches back on the spectrogram, ``(B, N, fshape*tshape) -> (B, 1, F, T)``.

    Where patches overlap (stride < shape) each pixel is the **mean** of the patches covering
    it; pixels no patch covers (a tail shorter than a stride) are 0. For non-overlapping grids
    this inverts :func:`unfold_patches` exactly on the covered area.
    """
    if patches.dim() != 3 or tuple(patches.shape[1:]) != (grid.num_patches, grid.patch_dim):
        raise ValueError(
            f"fold_patches: patches must be (B, num_patches={grid.num_patches}, "
            f"patch_dim={grid.patch_dim}), got shape {tuple(patches.shape)}"
        )
    fold = dict(
        output_size=(grid.input_fdim, grid.input_tdim),
        kernel_size=(grid.fshape, grid.tshape),
        stride=(grid.fstride, grid.tstride),
    )
    summed = F.fold(patches.transpose(1, 2), **fold)  # (B, 1, F, T)
    ones = torch.ones_like(patches[:1]).transpose(1, 2)  # (1, P, N)
    count = F.fold(ones, **fold).clamp(min=1)  # (1, 1, F, T): patches covering each pixel
    return summed / count


def encoder_flops(grid: PatchGrid, embed_dim: int, depth: int, cls_tokens: int = 2) -> int:
    """Approximate FLOPs (2 x multiply-adds) of one clip through patch embedding and encoder.

    With ``N`` patches, ``L = N + cls_tokens`` tokens, ``D = embed_dim`` and ``P = fshape*tshape``:

    * patch embedding: ``N * P * D`` multiply-adds;
    * each block: ``12 * L * D^2`` (qkv ``3LD^2``, attention output projection ``LD^2``, MLP
      with ratio 4 ``8LD^2``) plus ``2 * L^2 * D`` (``q k^T`` and ``attn @ v``).

    Norms, softmax, GELU, biases and the prediction heads are left out (a few percent).
    The ``L^2`` term is why overlapping fine-tuning strides cost so much.
    """
    n, d = grid.num_patches, embed_dim
    length = n + cls_tokens
    macs = n * grid.patch_dim * d + depth * (12 * length * d * d + 2 * length * length * d)
    return 2 * macs
