"""Chapter 02: patch grids, patch embedding, unfold/fold and the FLOP estimate."""

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ssast_teach.patches import (
    PatchEmbed,
    PatchGrid,
    encoder_flops,
    fold_patches,
    to_image,
    unfold_patches,
)

# (input_fdim, input_tdim, fshape, tshape, fstride, tstride) -> (f_dim, t_dim)
GRIDS = {
    "patch pretraining": ((128, 1024, 16, 16, 16, 16), (8, 64)),
    "frame pretraining": ((128, 1024, 128, 2, 128, 2), (1, 512)),
    "speech commands patch": ((128, 100, 16, 16, 10, 10), (12, 9)),
    "esc-50 patch": ((128, 512, 16, 16, 10, 10), (12, 50)),
    "speech commands frame": ((128, 128, 128, 2, 128, 1), (1, 127)),
}


def conv_output_size(grid: PatchGrid) -> tuple[int, int]:
    """What the official code does: run a Conv2d and read its output shape."""
    conv = nn.Conv2d(1, 1, (grid.fshape, grid.tshape), (grid.fstride, grid.tstride))
    with torch.no_grad():
        out = conv(torch.zeros(1, 1, grid.input_fdim, grid.input_tdim))
    return out.shape[2], out.shape[3]


@pytest.mark.parametrize("name", list(GRIDS))
def test_grid_sizes_equal_conv_output(name):
    args, (f_dim, t_dim) = GRIDS[name]
    grid = PatchGrid(*args)
    assert (grid.f_dim, grid.t_dim) == (f_dim, t_dim) == conv_output_size(grid)
    assert grid.num_patches == f_dim * t_dim
    assert grid.patch_dim == args[2] * args[3]


def test_grid_defaults_are_patch_pretraining():
    grid = PatchGrid()
    assert (grid.num_patches, grid.patch_dim, grid.overlapping) == (512, 256, False)
    assert PatchGrid(128, 100, 16, 16, 10, 10).overlapping


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(input_fdim=128, input_tdim=64, fshape=256, tshape=16), "fshape"),
        (dict(input_fdim=128, input_tdim=8, fshape=16, tshape=16), "tshape"),
        (dict(fstride=0), "fstride"),
        (dict(tstride=-1), "tstride"),
        (dict(input_tdim=10.5), "input_tdim"),
    ],
)
def test_bad_geometry_names_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        PatchGrid(**kwargs)


@pytest.mark.parametrize("name", list(GRIDS))
def test_unfold_equals_torch_unfold(name):
    args, _ = GRIDS[name]
    grid = PatchGrid(*args)
    x = torch.randn(2, 1, grid.input_fdim, grid.input_tdim)
    expected = nn.Unfold((grid.fshape, grid.tshape), stride=(grid.fstride, grid.tstride))(x)
    assert torch.equal(unfold_patches(x, grid), expected.transpose(1, 2))


def test_patch_index_is_row_major():
    grid = PatchGrid(32, 48, 16, 16, 16, 16)  # 2 x 3 patches
    x = torch.arange(32 * 48, dtype=torch.float32).reshape(1, 1, 32, 48)
    patches = unfold_patches(x, grid)
    # patch 4 = f_row 1, t_col 1: its first value sits at bin 16, frame 16
    assert patches[0, 4, 0] == x[0, 0, 16, 16]
    assert patches[0, 4, 1] == x[0, 0, 16, 17]  # values row-major inside the patch


@pytest.mark.parametrize("args", [(128, 64, 16, 16, 16, 16), (128, 64, 128, 2, 128, 2)])
def test_fold_inverts_unfold_without_overlap(args):
    grid = PatchGrid(*args)
    x = torch.randn(2, 1, grid.input_fdim, grid.input_tdim)
    assert torch.equal(fold_patches(unfold_patches(x, grid), grid), x)


def test_fold_averages_overlaps_and_zeroes_the_uncovered_tail():
    grid = PatchGrid(128, 100, 16, 16, 10, 10)  # covers bins 0..125, frames 0..95
    x = torch.randn(1, 1, 128, 100)
    y = fold_patches(unfold_patches(x, grid), grid)
    torch.testing.assert_close(y[..., :126, :96], x[..., :126, :96])
    assert y[..., 126:, :].abs().sum() == 0 and y[..., :, 96:].abs().sum() == 0
    ones = fold_patches(torch.ones(1, grid.num_patches, grid.patch_dim), grid)
    torch.testing.assert_close(ones[..., :126, :96], torch.ones(1, 1, 126, 96))


def test_to_image_and_patch_embed_is_a_linear_map_of_patches():
    grid = PatchGrid(128, 64, 16, 16, 10, 10)
    fbank = torch.randn(2, 64, 128)  # (B, T, F)
    image = to_image(fbank)
    assert image.shape == (2, 1, 128, 64) and torch.equal(image[0, 0, 5, 7], fbank[0, 7, 5])
    embed = PatchEmbed(grid, 32)
    tokens = embed(image)
    assert tokens.shape == (2, grid.num_patches, 32)
    as_linear = unfold_patches(image, grid) @ embed.proj.weight.reshape(32, -1).T + embed.proj.bias
    torch.testing.assert_close(tokens, as_linear, rtol=1e-5, atol=1e-5)


def test_shape_errors_name_what_was_expected():
    grid = PatchGrid(128, 64)
    with pytest.raises(ValueError, match="input_tdim=64"):
        unfold_patches(torch.zeros(1, 1, 128, 65), grid)
    with pytest.raises(ValueError, match="num_patches=32"):
        fold_patches(torch.zeros(1, 31, 256), grid)
    with pytest.raises(ValueError, match=r"\(B, T, F\)"):
        to_image(torch.zeros(1, 1, 64, 128))


def test_encoder_flops_matches_torch_flop_counter():
    from ssast_teach.model import SSASTModel

    model = SSASTModel.for_pretraining(size="mini", input_tdim=64)
    model.attention = "explicit"  # the counter does not see CPU fused attention: use matmuls
    x = torch.randn(1, 64, 128)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.tokens(x)
    assert counter.get_total_flops() == encoder_flops(model.grid, 64, 4, 2)


def test_encoder_flops_grow_with_overlap():
    coarse = encoder_flops(PatchGrid(128, 512, 16, 16, 16, 16), 768, 12)
    fine = encoder_flops(PatchGrid(128, 512, 16, 16, 10, 10), 768, 12)
    assert fine > 2 * coarse
