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
    set_table_size,
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
    (8, 64, 10),
    (8, 8, 16),
]


def official_restatement(
    N, M, t_dim, rng, *, exclude_first=True, wrap_rows=True, keep="set_order"
):  # fmt: skip
    """The official ``gen_maskid_patch`` (src/models/ast_models.py) as it is written, written
    independently of the library: a list with repeats, a set built from it at the end; flags
    for the corrected forms."""
    c = rng.randrange(3) + 3
    mask_id = []
    while len(set(mask_id)) <= M:
        start = rng.randrange(N)
        cur_mask = []
        for i in range(c):
            for j in range(c):
                if not wrap_rows and start % t_dim + j >= t_dim:
                    continue
                cell = start + t_dim * i + j
                if (cell > 0 or not exclude_first) and cell < N:
                    cur_mask.append(cell)
        mask_id = mask_id + cur_mask
    if keep == "set_order":
        return sorted(list(set(mask_id))[:M])  # the set's own order decides, then sorted
    return sorted(rng.sample(sorted(set(mask_id)), M))


# (N, M, t_dim): small mask_patch, where the set's table (32 or 128 slots for 10 to 76 ids of
# 512, 512 slots for 100 or 250 of 1212) is smaller than the ids, and the official sizes
# (N, M, t_dim, whether some clips' sets iterate out of id order)
SET_ORDER_SIZES = [(512, 10, 64, True), (512, 25, 64, True), (512, 50, 64, True),
                   (64, 16, 8, True), (1212, 100, 101, True), (1212, 250, 101, True),
                   (512, 400, 64, False), (128, 25, 16, False), (16, 14, 4, False)]  # fmt: skip


@pytest.mark.parametrize(("N", "M", "t_dim", "out_of_order"), SET_ORDER_SIZES)
def test_reference_is_the_official_function_draw_for_draw(N, M, t_dim, out_of_order):
    unsorted = 0
    for seed in range(40):
        mine = cluster_mask_reference(N, M, t_dim, random.Random(seed))
        assert sorted(mine) == official_restatement(N, M, t_dim, random.Random(seed)), seed
        unsorted += mine != sorted(mine)
    assert (unsorted > 0) == out_of_order, unsorted


def test_set_table_size_is_cpythons():
    rng = random.Random(0)
    for count in range(2, 1500):
        slots = set_table_size(count)
        ids = rng.sample(range(slots), count)  # every id below the table size: id order
        assert list(set(ids)) == sorted(ids), count
        ids = list(range(1, count)) + [slots]  # one id as large as the table: not id order
        rng.shuffle(ids)
        assert list(set(ids)) != sorted(ids), count
    assert [set_table_size(d) for d in (10, 19, 76, 77, 306, 307)] == [32, 128, 128, 512, 512, 2048]


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
    assert_valid(cluster_mask(4, 32, 30, 2, gen(1), wrap_rows=False), 4, 30, 1, 32)  # c > t_dim


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
    ("f_dim", "t_dim", "mask_patch", "mean_z2_max", "python_clips", "batched_clips"),
    [(8, 64, 400, 1.6, 2000, 20000), (4, 8, 20, 2.5, 2000, 20000), (8, 64, 10, 1.6, 2000, 6000),
     (8, 8, 16, 2.5, 10000, 10000), (12, 101, 100, 1.6, 2000, 3000)],
)  # fmt: skip
def test_cluster_mask_matches_the_official_distribution(
    f_dim, t_dim, mask_patch, mean_z2_max, python_clips, batched_clips
):
    """Small mask_patch included: there the set keeps other ids than the lowest (keeping the
    lowest fails all three small cases)."""
    N, M = f_dim * t_dim, mask_patch
    official = python_masks(lambda rng: official_restatement(N, M, t_dim, rng), python_clips, 0)
    library_reference = python_masks(
        lambda rng: sorted(cluster_mask_reference(N, M, t_dim, rng)), python_clips, 1
    )
    batched = cluster_mask(batched_clips, N, M, t_dim, gen(2))
    assert_same_frequencies(batched, official, N, mean_z2_max)
    assert_same_frequencies(library_reference, official, N, mean_z2_max)


@pytest.mark.parametrize(
    ("flags", "N", "t_dim", "M", "clips"),
    [
        ({"keep": "random"}, 32, 8, 20, 20000),
        ({"wrap_rows": False}, 32, 8, 20, 20000),
        ({"exclude_first": False}, 32, 8, 20, 20000),
        ({"keep": "random", "wrap_rows": False, "exclude_first": False}, 32, 8, 20, 20000),
        ({"wrap_rows": False, "exclude_first": False}, 64, 8, 16, 6000),  # set order replayed
    ],
)
def test_corrected_flags_match_their_restatement(flags, N, t_dim, M, clips):
    restated = {
        "keep": flags.get("keep", "set_order"),
        "wrap_rows": flags.get("wrap_rows", True),
        "exclude_first": flags.get("exclude_first", True),
    }
    official = python_masks(lambda rng: official_restatement(N, M, t_dim, rng, **restated), 2000, 0)
    assert_same_frequencies(cluster_mask(clips, N, M, t_dim, gen(3), **flags), official, N, 2.5)


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


@pytest.mark.parametrize("flags", [{}, {"wrap_rows": False, "exclude_first": False}])
def test_replayed_clips_collect_what_the_batched_draw_collected(flags, monkeypatch):
    """Where a set iterates in id order, replaying a clip's drawn starts into a Python set (the
    path of small mask_patch) must keep exactly the ids the tensor path keeps."""
    import ssast_teach.masking as masking

    sizes = [(512, 400, 64), (12, 9, 2)]  # the pretraining grid; clusters wider than a row
    fast = [cluster_mask(64, n, m, t, gen(9), **flags) for n, m, t in sizes]
    monkeypatch.setattr(masking, "_set_table_sizes", lambda n: torch.zeros(n + 1, dtype=torch.long))
    for (n, m, t), expected in zip(sizes, fast, strict=True):
        assert torch.equal(masking.cluster_mask(64, n, m, t, gen(9), **flags), expected)
