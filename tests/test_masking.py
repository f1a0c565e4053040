"""Chapter 03: the masks. Exact shapes, seeds, and the official cluster distribution."""

import random

import pytest
import torch

from ssast_teach.masking import (
    cluster_mask,
    cluster_mask_reference,
    frame_mask,
    mask_to_dense,
    mask_to_grid,
    masking_frequency,
    random_mask,
)

# (f_dim, t_dim, mask_patch): the pretraining grid with the paper's three mask sizes, the
# frame model's 1 x 512, and small grids.
CLUSTER_GEOMETRIES = [
    (8, 64, 400),
    (8, 64, 250),
    (8, 64, 100),
    (1, 512, 400),
    (4, 8, 20),
    (4, 8, 3),
]


def official_restatement(N, M, t_dim, rng, *, exclude_first=True, wrap_rows=True, lowest=True):
    """SPEC 4 once more, written independently of the library, flags included."""
    c = rng.randrange(3) + 3
    ids = set()
    while len(ids) <= M:
        start = rng.randrange(N)
        for i in range(c):
            for j in range(c):
                if not wrap_rows and start % t_dim + j >= t_dim:
                    continue
                cell = start + t_dim * i + j
                if (cell > 0 or not exclude_first) and cell < N:
                    ids.add(cell)
    # Iterate the set itself, as the official code does (not sorted()): this checks that the
    # library's "lowest ids" is CPython's set order for these sizes.
    return list(ids)[:M] if lowest else rng.sample(sorted(ids), M)


def python_masks(fn, clips, seed):
    rng = random.Random(seed)
    return torch.tensor([fn(rng) for _ in range(clips)])  # (clips, M)


def assert_same_frequencies(masks_a, masks_b, num_patches, mean_z2_max):
    """Per-cell masking frequencies agree: no cell off by > 6 standard errors, and the mean
    squared z over cells (about 1 under the null) below ``mean_z2_max``."""
    a = mask_to_dense(masks_a, num_patches).double().mean(0)  # (N,)
    b = mask_to_dense(masks_b, num_patches).double().mean(0)  # (N,)
    var = a * (1 - a) / len(masks_a) + b * (1 - b) / len(masks_b)
    var = var.clamp(min=1.0 / len(masks_a) ** 2)  # cells never (or always) masked in both
    z = (a - b) / var.sqrt()
    assert z.abs().max() < 6, (
        f"cell {int(z.abs().argmax())}: {a[z.abs().argmax()]:.3f} vs {b[z.abs().argmax()]:.3f}"
    )
    assert (z**2).mean() < mean_z2_max, float((z**2).mean())


def gen(seed):
    return torch.Generator().manual_seed(seed)


def assert_valid(masks, batch, mask_patch, low, num_patches):
    assert masks.shape == (batch, mask_patch) and masks.dtype == torch.long
    assert bool((masks[:, 1:] > masks[:, :-1]).all()), "ids sorted and distinct in each row"
    assert int(masks.min()) >= low and int(masks.max()) < num_patches


@pytest.mark.parametrize(("f_dim", "t_dim", "mask_patch"), CLUSTER_GEOMETRIES)
def test_cluster_mask_shape_distinct_and_never_id_zero(f_dim, t_dim, mask_patch):
    N = f_dim * t_dim
    masks = cluster_mask(32, N, mask_patch, t_dim, gen(0))
    assert_valid(masks, 32, mask_patch, 1, N)


@pytest.mark.parametrize(
    ("num_patches", "mask_patch"), [(512, 400), (512, 100), (32, 10), (32, 32)]
)
def test_frame_mask_shape_and_distinct(num_patches, mask_patch):
    masks = frame_mask(32, num_patches, mask_patch, num_patches, gen(0))
    assert_valid(masks, 32, mask_patch, 0, num_patches)


def test_extreme_mask_sizes_terminate():
    # the most the official rule allows: all but one of the 511 maskable ids (several chunks)
    assert_valid(cluster_mask(4, 512, 510, 64, gen(1)), 4, 510, 1, 512)
    masks = cluster_mask(4, 32, 31, 8, gen(1), exclude_first=False)
    assert_valid(masks, 4, 31, 0, 32)
    assert_valid(cluster_mask(4, 32, 1, 8, gen(1)), 4, 1, 1, 32)


def test_seeded_masks_repeat_and_differ():
    for make in (
        lambda g: cluster_mask(8, 512, 400, 64, g),
        lambda g: cluster_mask(8, 512, 400, 64, g, keep="random"),
        lambda g: frame_mask(8, 512, 400, None, g),
    ):
        assert torch.equal(make(gen(7)), make(gen(7)))
        assert not torch.equal(make(gen(7)), make(gen(8)))
    torch.manual_seed(3)
    first = cluster_mask(4, 32, 20, 8)  # no generator: the global one
    torch.manual_seed(3)
    assert torch.equal(first, cluster_mask(4, 32, 20, 8, device="cpu"))


def test_masks_round_trip_through_dense_and_grid():
    masks = cluster_mask(16, 512, 250, 64, gen(2))
    dense = mask_to_dense(masks, 512)  # (B, N)
    assert dense.dtype == torch.bool and dense.shape == (16, 512)
    assert torch.equal(dense.nonzero()[:, 1].view(16, 250), masks)
    grid = mask_to_grid(torch.tensor([[0, 9, 15]]), 2, 8)  # (1, 2, 8)
    assert grid.shape == (1, 2, 8) and int(grid.sum()) == 3
    assert grid[0, 0, 0] and grid[0, 1, 1] and grid[0, 1, 7]
    freq = masking_frequency(masks, 8, 64)  # (8, 64)
    assert freq.shape == (8, 64) and float(freq.sum()) == pytest.approx(250)


@pytest.mark.parametrize(("num_patches", "mask_patch", "clips"), [(512, 400, 2000), (32, 10, 4000)])
def test_frame_masks_are_uniform(num_patches, mask_patch, clips):
    freq = mask_to_dense(frame_mask(clips, num_patches, mask_patch, None, gen(4)), num_patches)
    freq = freq.double().mean(0)  # (N,)
    p = mask_patch / num_patches
    standard_error = (p * (1 - p) / clips) ** 0.5
    assert float((freq - p).abs().max()) < 5.5 * standard_error
    assert torch.equal(random_mask(8, 512, 400, gen(5)), frame_mask(8, 512, 400, 64, gen(5)))


@pytest.mark.parametrize(
    ("f_dim", "t_dim", "mask_patch", "mean_z2_max"), [(8, 64, 400, 1.6), (4, 8, 20, 2.5)]
)
def test_cluster_mask_matches_the_official_distribution(f_dim, t_dim, mask_patch, mean_z2_max):
    N, M = f_dim * t_dim, mask_patch
    official = python_masks(lambda rng: official_restatement(N, M, t_dim, rng), 2000, seed=0)
    library_reference = python_masks(lambda rng: cluster_mask_reference(N, M, t_dim, rng), 2000, 1)
    batched = cluster_mask(20000, N, M, t_dim, gen(2))
    assert_same_frequencies(batched, official, N, mean_z2_max)
    assert_same_frequencies(library_reference, official, N, mean_z2_max)


@pytest.mark.parametrize(
    "flags",
    [
        {"keep": "random"},
        {"wrap_rows": False},
        {"exclude_first": False},
        {"keep": "random", "wrap_rows": False, "exclude_first": False},
    ],
)
def test_corrected_flags_match_their_restatement(flags):
    N, t_dim, M = 32, 8, 20
    restated = {
        "lowest": flags.get("keep", "lowest") == "lowest",
        "wrap_rows": flags.get("wrap_rows", True),
        "exclude_first": flags.get("exclude_first", True),
    }
    official = python_masks(lambda rng: official_restatement(N, M, t_dim, rng, **restated), 2000, 0)
    assert_same_frequencies(cluster_mask(20000, N, M, t_dim, gen(3), **flags), official, N, 2.5)


def test_official_masking_is_not_uniform_and_the_flags_change_it():
    clips = 4000
    official = masking_frequency(cluster_mask(clips, 512, 400, 64, gen(6)), 8, 64)  # (8, 64)
    rows = official.mean(1)  # (8,)
    # clusters grow down and right from a uniform start: the top row is covered least
    assert rows[0] < 0.5 and bool((rows[3:7] > 0.8).all())
    assert official[0, 0] == 0  # id 0 is never masked
    # the lowest ids win the truncation: the last row loses, unlike with keep="random"
    assert rows[6] - rows[7] > 0.03
    flat = masking_frequency(cluster_mask(clips, 512, 400, 64, gen(6), keep="random"), 8, 64)
    assert abs(flat.mean(1)[6] - flat.mean(1)[7]) < 0.02
    assert flat[:, -8:].mean() > official[:, -8:].mean() + 0.02  # the last columns too
    # without wrapping, column 0 is only reached by clusters that start in it
    unwrapped = masking_frequency(cluster_mask(clips, 512, 400, 64, gen(6), wrap_rows=False), 8, 64)
    assert unwrapped[:, 0].mean() < official[:, 0].mean() - 0.2
    with_zero = masking_frequency(
        cluster_mask(clips, 512, 400, 64, gen(6), exclude_first=False), 8, 64
    )
    assert with_zero[0, 0] > 0.05
    uniform = masking_frequency(random_mask(clips, 512, 400, gen(6)), 8, 64)
    assert (
        float(uniform.max() - uniform.min()) < 0.1 < float(official.max() - official[0, 1:].min())
    )


def test_reference_is_seeded_and_valid():
    a = cluster_mask_reference(512, 400, 64, random.Random(0))
    assert a == cluster_mask_reference(512, 400, 64, random.Random(0))
    assert len(a) == 400 and a == sorted(set(a)) and a[0] >= 1 and a[-1] < 512


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: cluster_mask(0, 512, 400, 64), "batch"),
        (lambda: cluster_mask(True, 512, 400, 64), "batch"),
        (lambda: cluster_mask(4, 512, 0, 64), "mask_patch"),
        (lambda: cluster_mask(4, 512, 511, 64), "mask_patch"),
        (lambda: cluster_mask(4, 512, 400.0, 64), "mask_patch"),
        (lambda: cluster_mask(4, 512, 400, 60), "t_dim"),
        (lambda: cluster_mask(4, 512, 400, 0), "t_dim"),
        (lambda: cluster_mask(4, 1, 1, 1), "num_patches"),
        (lambda: cluster_mask(4, 512, 400, 64, keep="median"), "keep"),
        (lambda: cluster_mask(4, 512, 400, 64, cluster_sizes=()), "cluster_sizes"),
        (lambda: cluster_mask(4, 512, 400, 64, cluster_sizes=(3, 0)), "cluster_sizes"),
        (lambda: cluster_mask_reference(512, 511, 64, random.Random(0)), "mask_patch"),
        (lambda: frame_mask(4, 512, 513), "mask_patch"),
        (lambda: frame_mask(0, 512, 400), "batch"),
        (lambda: frame_mask(4, 512, 400, 100), "t_dim"),
        (lambda: random_mask(4, 512, -1), "mask_patch"),
        (lambda: mask_to_dense(torch.tensor([[0, 512]]), 512), "mask_ids"),
        (lambda: mask_to_dense(torch.tensor([0.0, 1.0]), 512), "mask_ids"),
        (lambda: mask_to_grid(torch.tensor([[0, 1]]), 0, 8), "f_dim"),
    ],
)
def test_bad_arguments_name_the_argument(call, argument):
    with pytest.raises(ValueError, match=argument):
        call()


def test_official_limit_depends_on_exclude_first():
    assert cluster_mask(2, 32, 31, 8, gen(0), exclude_first=False).shape == (2, 31)
    with pytest.raises(ValueError, match="mask_patch=31"):
        cluster_mask(2, 32, 31, 8, gen(0))
