"""Checkers of chapters 02 and 03: the worked solutions pass, each plausible wrong answer gets a
message that names it, a stub is reported, and the hidden cases follow the grader's seed."""

import random

import pytest
import torch
import torch.nn.functional as F

from ssast_teach.exercises import GRADER_SEED_ENV, ExerciseError, ch02, ch03
from ssast_teach.masking import cluster_mask_reference, frame_mask, masking_frequency, random_mask
from ssast_teach.patches import PatchGrid, fold_patches

# graded behaviour: a stub's check raises (tests/test_exercises_common.py covers the other)
pytestmark = pytest.mark.usefixtures("grading")

HIDDEN = [False, True]


def not_implemented(*args, **kwargs):
    raise NotImplementedError()


def _changes_with_seed(run, monkeypatch):
    """run(spy_log) runs a hidden check whose student function logs its inputs into spy_log."""
    logs = []
    for seed in (1, 2):
        monkeypatch.setenv(GRADER_SEED_ENV, str(seed))
        log = []
        run(log)
        logs.append(log)
    assert logs[0] and logs[1]
    return logs[0] != logs[1]


def _key(v):
    if isinstance(v, torch.Tensor):
        return (tuple(v.shape), round(float(v.double().sum()), 6))
    if isinstance(v, random.Random):
        return v.getstate()[1][:3]
    if isinstance(v, PatchGrid):
        return tuple(vars(v).values())
    return v


def spy(fn, log):
    def wrapped(*args, **kwargs):
        log.append(tuple(_key(a) for a in args))
        return fn(*args, **kwargs)

    return wrapped


# ---------------------------------------------------------------------------------------------
# Chapter 02: the worked solutions


def unfold_by_reshape(x, fshape, tshape):
    B, _, n_bins, n_frames = x.shape
    f_dim, t_dim = n_bins // fshape, n_frames // tshape
    x = x[:, 0, : f_dim * fshape, : t_dim * tshape]
    x = x.reshape(B, f_dim, fshape, t_dim, tshape).permute(0, 1, 3, 2, 4)
    return x.reshape(B, f_dim * t_dim, fshape * tshape)


def fold_by_reshape(patches, f_dim, t_dim, fshape, tshape):
    B = patches.shape[0]
    x = patches.reshape(B, f_dim, t_dim, fshape, tshape).permute(0, 1, 3, 2, 4)
    return x.reshape(B, 1, f_dim * fshape, t_dim * tshape)


def fold(patches, grid):
    sizes = dict(output_size=(grid.input_fdim, grid.input_tdim),
                 kernel_size=(grid.fshape, grid.tshape), stride=(grid.fstride, grid.tstride))
    summed = F.fold(patches.transpose(1, 2), **sizes)
    count = F.fold(torch.ones_like(patches).transpose(1, 2), **sizes)
    return summed / count.clamp(min=1)


@pytest.mark.parametrize("hidden", HIDDEN)
def test_worked_solutions_pass_ch02(hidden, capsys):
    assert ch02.check_unfold_by_reshape(unfold_by_reshape, hidden=hidden) is unfold_by_reshape
    assert ch02.check_fold_by_reshape(fold_by_reshape, hidden=hidden) is fold_by_reshape
    assert ch02.check_fold(fold, hidden=hidden) is None
    ch02.check_fold(fold_patches, hidden=hidden)  # the library passes the extension too
    lines = capsys.readouterr().out.splitlines()
    assert [line[:17] for line in lines] == [
        "✓ ch02 exercise 1", "✓ ch02 exercise 2", "✓ ch02 exercise 3", "✓ ch02 exercise 3"
    ]


def test_nn_unfold_passes_as_unfold_by_reshape():
    def with_nn_unfold(x, fshape, tshape):
        return torch.nn.Unfold((fshape, tshape), stride=(fshape, tshape))(x).transpose(1, 2)

    ch02.check_unfold_by_reshape(with_nn_unfold, hidden=True)


def test_ch02_stubs_report_and_fall_back(monkeypatch, capsys):
    for check in (ch02.check_unfold_by_reshape, ch02.check_fold_by_reshape, ch02.check_fold):
        with pytest.raises(ExerciseError, match="not implemented yet"):
            check(not_implemented)
    monkeypatch.delenv("SSAST_TEACH_GRADING")
    x = torch.randn(2, 1, 32, 48)
    back = ch02.check_fold_by_reshape(not_implemented)
    unfold = ch02.check_unfold_by_reshape(not_implemented)
    torch.testing.assert_close(back(unfold(x, 16, 16), 2, 3, 16, 16), x)
    assert ch02.check_fold(not_implemented) is None
    assert capsys.readouterr().out.count("not implemented yet") == 3


@pytest.mark.parametrize(
    "check, fn",
    [(ch02.check_unfold_by_reshape, unfold_by_reshape),
     (ch02.check_fold_by_reshape, fold_by_reshape), (ch02.check_fold, fold)],
    ids=["unfold", "fold_by_reshape", "fold"],
)
def test_ch02_hidden_cases_change_with_the_grader_seed(check, fn, monkeypatch):
    assert _changes_with_seed(lambda log: check(spy(fn, log), hidden=True), monkeypatch)


# ---------------------------------------------------------------------------------------------
# Chapter 02: wrong answers


def time_major(x, fshape, tshape):
    p = unfold_by_reshape(x, fshape, tshape)
    f_dim, t_dim = x.shape[2] // fshape, x.shape[3] // tshape
    return p.view(p.shape[0], f_dim, t_dim, -1).transpose(1, 2).reshape_as(p)


def inner_transposed(x, fshape, tshape):
    p = unfold_by_reshape(x, fshape, tshape)
    return p.view(*p.shape[:2], fshape, tshape).transpose(2, 3).reshape_as(p)


def no_permute(x, fshape, tshape):
    B, _, n_bins, n_frames = x.shape
    f_dim, t_dim = n_bins // fshape, n_frames // tshape
    return x[:, 0, : f_dim * fshape, : t_dim * tshape].reshape(B, f_dim * t_dim, fshape * tshape)


def keeps_tails(x, fshape, tshape):
    B, _, n_bins, n_frames = x.shape
    x = x[:, 0].reshape(B, n_bins // fshape, fshape, n_frames // tshape, tshape)
    return x.permute(0, 1, 3, 2, 4).reshape(B, -1, fshape * tshape)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda x, fs, ts: unfold_by_reshape(x, fs, ts).transpose(1, 2), r"\(B, P, N\)"),
        (time_major, "time-major order"),
        (inner_transposed, "inside each patch"),
        (no_permute, "without moving the axes"),
        (keeps_tails, "tails shorter than a patch"),
        (lambda x, fs, ts: unfold_by_reshape(x, fs, ts).double(), "dtype"),
        (lambda x, fs, ts: unfold_by_reshape(x, fs, ts)[:, :-1], "shape"),
        (lambda x, fs, ts: unfold_by_reshape(x, fs, ts).numpy(), "torch.Tensor"),
        (lambda x, fs, ts: unfold_by_reshape(x, fs, ts) + 1, "wrong values"),
    ],
    ids=["BPN", "time-major", "inner-transposed", "no-permute", "tails", "float64", "short",
         "numpy", "offset"],
)
def test_wrong_unfold_by_reshape(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        ch02.check_unfold_by_reshape(wrong)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda p, fd, td, fs, ts: p.reshape(p.shape[0], 1, fd * fs, td * ts),
         "without moving the axes back"),
        (lambda p, fd, td, fs, ts: fold_by_reshape(p, fd, td, fs, ts)[:, 0], "channel axis"),
        (lambda p, fd, td, fs, ts: fold_by_reshape(p, fd, td, fs, ts) * 2, "wrong values"),
        (lambda p, fd, td, fs, ts: fold_by_reshape(p, fd, td, fs, ts).transpose(2, 3), "shape"),
    ],
    ids=["no-permute", "no-channel", "scaled", "transposed"],
)
def test_wrong_fold_by_reshape(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        ch02.check_fold_by_reshape(wrong)


def summing_fold(patches, grid):
    return F.fold(patches.transpose(1, 2), output_size=(grid.input_fdim, grid.input_tdim),
                  kernel_size=(grid.fshape, grid.tshape), stride=(grid.fstride, grid.tstride))


def last_patch_wins(patches, grid):
    out = torch.zeros(patches.shape[0], 1, grid.input_fdim, grid.input_tdim)
    for k in range(grid.num_patches):
        r, c = divmod(k, grid.t_dim)
        f0, t0 = r * grid.fstride, c * grid.tstride
        out[:, 0, f0 : f0 + grid.fshape, t0 : t0 + grid.tshape] = patches[:, k].view(
            -1, grid.fshape, grid.tshape)
    return out


def by_max_count(patches, grid):
    cover = (-(-grid.fshape // grid.fstride)) * (-(-grid.tshape // grid.tstride))
    return summing_fold(patches, grid) / cover


def fills_uncovered(patches, grid):
    out = fold(patches, grid)
    return out + (out == 0) * 0.5


def squares(patches, grid):
    return fold(patches * patches.abs(), grid)


def in_place(patches, grid):
    out = fold(patches, grid)
    patches.mul_(1.0).add_(0.0)
    patches[0, 0, 0] += 1
    return out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (summing_fold, "you summed them"),
        (last_patch_wins, "MEAN of the patches"),
        (by_max_count, "not x on the covered pixels"),
        (fills_uncovered, "no patch covers must be 0"),
        (squares, "not x on the covered pixels|not linear"),
        (in_place, "changed its input"),
        (lambda p, grid: fold(p, grid)[:, 0], "shape"),
        (lambda p, grid: fold(p, grid).double(), "dtype"),
        (not_implemented, "not implemented yet"),
    ],
    ids=["sum", "last-wins", "max-count", "uncovered", "nonlinear", "in-place", "no-channel",
         "float64", "stub"],
)
def test_wrong_fold(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        ch02.check_fold(wrong)


# ---------------------------------------------------------------------------------------------
# Chapter 03: the worked solutions


def frame_mask_one_clip(num_patches, mask_patch, rng):
    return sorted(rng.sample(range(num_patches), mask_patch))


def cluster_mask_one_clip(num_patches, mask_patch, t_dim, rng):
    c = rng.randrange(3) + 3
    ids = set()
    while len(ids) <= mask_patch:
        start = rng.randrange(num_patches)
        for i in range(c):
            for j in range(c):
                cell = start + t_dim * i + j
                if 0 < cell < num_patches:
                    ids.add(cell)
    return list(ids)[:mask_patch]


def flat_cluster_mask(num_patches, mask_patch, t_dim, rng):
    c = rng.randrange(3) + 3
    f_dim = num_patches // t_dim
    ids = set()
    while len(ids) < mask_patch:
        row, col = rng.randrange(1 - c, f_dim), rng.randrange(1 - c, t_dim)
        for i in range(c):
            for j in range(c):
                if 0 <= row + i < f_dim and 0 <= col + j < t_dim:
                    ids.add((row + i) * t_dim + col + j)
    return sorted(rng.sample(sorted(ids), mask_patch))


@pytest.mark.parametrize("hidden", HIDDEN)
def test_worked_solutions_pass_ch03(hidden, capsys):
    assert ch03.check_frame_mask_one_clip(frame_mask_one_clip, hidden=hidden) is frame_mask_one_clip
    assert ch03.check_cluster_mask_one_clip(cluster_mask_one_clip, hidden=hidden) is (
        cluster_mask_one_clip
    )
    assert ch03.check_random_mask(random_mask, hidden=hidden) is random_mask
    ch03.check_random_mask(frame_mask, hidden=hidden)
    ch03.check_masking_frequency(masking_frequency, hidden=hidden)
    assert ch03.check_flat_cluster_mask(flat_cluster_mask, hidden=hidden) is None
    lines = capsys.readouterr().out.splitlines()
    assert [line[:17] for line in lines] == [
        f"✓ ch03 exercise {k}" for k in (1, 2, 3, 3, 4, 5)
    ]


def test_the_library_reference_passes_as_the_cluster_mask():
    ch03.check_cluster_mask_one_clip(cluster_mask_reference, hidden=True)
    ch03.check_cluster_mask_one_clip(
        lambda n, m, t, rng: cluster_mask_one_clip(n, m, t, rng)[::-1]  # any order
    )


def test_ch03_stubs_report_and_fall_back(monkeypatch, capsys):
    checks = (ch03.check_frame_mask_one_clip, ch03.check_cluster_mask_one_clip,
              ch03.check_random_mask, ch03.check_masking_frequency, ch03.check_flat_cluster_mask)
    for check in checks:
        with pytest.raises(ExerciseError, match="not implemented yet"):
            check(not_implemented)
    monkeypatch.delenv("SSAST_TEACH_GRADING")
    fallback = ch03.check_cluster_mask_one_clip(not_implemented)
    assert sorted(fallback(512, 400, 64, random.Random(0))) == cluster_mask_reference(
        512, 400, 64, random.Random(0))
    assert ch03.check_frame_mask_one_clip(not_implemented)(8, 3, random.Random(0)) == sorted(
        random.Random(0).sample(range(8), 3))
    assert ch03.check_random_mask(not_implemented) is random_mask
    assert ch03.check_masking_frequency(not_implemented) is masking_frequency
    assert ch03.check_flat_cluster_mask(not_implemented) is None
    assert capsys.readouterr().out.count("not implemented yet") == 5


@pytest.mark.parametrize(
    "check, fn",
    [(ch03.check_frame_mask_one_clip, frame_mask_one_clip),
     (ch03.check_cluster_mask_one_clip, cluster_mask_one_clip),
     (ch03.check_random_mask, random_mask),
     (ch03.check_masking_frequency, masking_frequency),
     (ch03.check_flat_cluster_mask, flat_cluster_mask)],
    ids=["frame", "cluster", "random", "frequency", "flat"],
)
def test_ch03_hidden_cases_change_with_the_grader_seed(check, fn, monkeypatch):
    assert _changes_with_seed(lambda log: check(spy(fn, log), hidden=True), monkeypatch)


def test_random_mask_checker_leaves_global_rng_alone():
    torch.manual_seed(3)
    before = torch.rand(1)
    torch.manual_seed(3)
    ch03.check_random_mask(random_mask)
    assert torch.equal(torch.rand(1), before)


# ---------------------------------------------------------------------------------------------
# Chapter 03: wrong answers, per-clip masks


def official_with(**flags):
    from ssast_teach.exercises.ch03 import _cluster_variant

    return lambda n, m, t, rng: _cluster_variant(n, m, t, rng, **flags)


def global_random_cluster(n, m, t, rng):
    return cluster_mask_one_clip(n, m, t, random.Random(random.random()))


def start_before_c(n, m, t, rng):
    ids, first = set(), rng.randrange(n)
    c = rng.randrange(3) + 3
    starts = [first]
    while len(ids) <= m:
        start = starts.pop() if starts else rng.randrange(n)
        for i in range(c):
            for j in range(c):
                if 0 < start + t * i + j < n:
                    ids.add(start + t * i + j)
    return sorted(ids)[:m]


@pytest.mark.parametrize(
    "wrong, message",
    [
        (official_with(wrap=False), "wraps into the next one"),
        (official_with(more=False), "MORE than mask_patch"),
        (official_with(exclude_first=False), "id 0"),
        (official_with(per_clip=False), "once per clip"),
        (official_with(keep="highest"), "kept the highest ids"),
        (official_with(keep="lowest"), "kept the lowest ids .* set's own iteration order"),
        (lambda n, m, t, rng: cluster_mask_one_clip(n, m, t, rng)[:-1], "exactly mask_patch"),
        (lambda n, m, t, rng: sorted(set(cluster_mask_one_clip(n, m + 1, t, rng)) if m + 1 < n - 1
                                     else cluster_mask_one_clip(n, m, t, rng) + [0]),
         "exactly mask_patch|keep only the first"),
        (lambda n, m, t, rng: cluster_mask_one_clip(n, m, t, rng)[:-1] + [n], "exactly|outside"),
        (lambda n, m, t, rng: [v + n for v in cluster_mask_one_clip(n, m, t, rng)], "outside"),
        (lambda n, m, t, rng: [float(v) for v in cluster_mask_one_clip(n, m, t, rng)],
         "list of ints"),
        (global_random_cluster, "same seed"),
        (start_before_c, "not the official mask for this seed"),
        (lambda n, m, t, rng: sorted(rng.sample(range(1, n), m)), "not the official mask"),
        (not_implemented, "not implemented yet"),
    ],
    ids=["no-wrap", "stops-at-M", "id-0", "c-per-cluster", "highest", "lowest", "one-short",
         "no-cut",
         "past-end", "shifted", "floats", "global-random", "draw-order", "uniform", "stub"],
)
def test_wrong_cluster_mask_one_clip(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        ch03.check_cluster_mask_one_clip(wrong)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda n, m, rng: rng.sample(range(n), m), "not sorted"),
        (lambda n, m, rng: sorted(rng.choices(range(n), k=m)), "repeats an id"),
        (lambda n, m, rng: sorted(random.sample(range(n), m)), "same seed"),
        (lambda n, m, rng: sorted(rng.sample(range(n), n))[:m] if m < n else list(range(n)),
         "not the official one"),
        (lambda n, m, rng: frame_mask_one_clip(n, m, rng)[1:], "exactly mask_patch"),
        (not_implemented, "not implemented yet"),
    ],
    ids=["unsorted", "with-replacement", "global-random", "shuffle-then-cut", "one-short",
         "stub"],
)
def test_wrong_frame_mask_one_clip(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        ch03.check_frame_mask_one_clip(wrong)


# ---------------------------------------------------------------------------------------------
# Chapter 03: wrong answers, the extension


def corrected_flags(n, m, t, rng):
    """The chapter's three corrected flags: the low-row edge effect stays."""
    from ssast_teach.exercises.ch03 import _cluster_variant

    ids = _cluster_variant(n, m, t, rng, exclude_first=False, wrap=False)
    return sorted(rng.sample(sorted(set(ids)), m))


def flat_global_rng(n, m, t, rng):
    return flat_cluster_mask(n, m, t, random.Random(random.random()))


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda n, m, t, rng: cluster_mask_reference(n, m, t, rng), "row 0 is masked at rate"),
        (corrected_flags, "row 0 is masked at rate"),
        (lambda n, m, t, rng: sorted(rng.sample(range(n), m)), "mask clusters"),
        (lambda n, m, t, rng: flat_cluster_mask(n, m, t, rng)[:-1], "exactly mask_patch"),
        (lambda n, m, t, rng: flat_cluster_mask(n, m, t, rng)[:-1] * 2, "exactly|repeats"),
        (lambda n, m, t, rng: [v + 1 for v in flat_cluster_mask(n, m, t, rng)], "outside"),
        (flat_global_rng, "same seed"),
        (lambda n, m, t, rng: list(range(m)), "same mask for two seeds"),
        (not_implemented, "not implemented yet"),
    ],
    ids=["official", "corrected-flags", "uniform", "one-short", "repeats", "shifted",
         "global-random", "not-random", "stub"],
)
def test_wrong_flat_cluster_mask(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        ch03.check_flat_cluster_mask(wrong)


# ---------------------------------------------------------------------------------------------
# Chapter 03: wrong answers, batched random mask and masking frequency


def global_rng_mask(batch, num_patches, mask_patch, generator=None):
    return random_mask(batch, num_patches, mask_patch)


def unsorted_mask(batch, num_patches, mask_patch, generator=None):
    return torch.rand(batch, num_patches, generator=generator).topk(mask_patch, dim=1).indices


def with_replacement(batch, num_patches, mask_patch, generator=None):
    return torch.randint(num_patches, (batch, mask_patch), generator=generator).sort(dim=1).values


def never_zero(batch, num_patches, mask_patch, generator=None):
    if mask_patch >= num_patches:
        return random_mask(batch, num_patches, mask_patch, generator)
    return random_mask(batch, num_patches - 1, mask_patch, generator) + 1


def loop_over_clips(batch, num_patches, mask_patch, generator=None):
    return torch.stack([random_mask(1, num_patches, mask_patch, generator)[0] for _ in range(batch)])


def biased_scores(shift):
    """Scores with ``shift(num_patches)`` (N,) added: not every id equally likely."""

    def mask(batch, num_patches, mask_patch, generator=None):
        scores = torch.rand(batch, num_patches, generator=generator) + shift(num_patches)
        return scores.argsort(dim=1)[:, :mask_patch].sort(dim=1).values

    return mask


def contiguous_block(batch, num_patches, mask_patch, generator=None):
    start = torch.randint(num_patches, (batch, 1), generator=generator)
    return ((start + torch.arange(mask_patch)) % num_patches).sort(dim=1).values


@pytest.mark.parametrize(
    "wrong, message",
    [
        (global_rng_mask, "from two generators with the same seed"),
        (unsorted_mask, "not sorted"),
        (with_replacement, "WITHOUT replacement"),
        (never_zero, "not uniform"),
        (contiguous_block, "independently of their neighbours"),
        (loop_over_clips, "loops over clips"),
        (biased_scores(lambda n: 0.05 * (torch.arange(n) == 0)), "not uniform"),
        (biased_scores(lambda n: -0.05 * (torch.arange(n) == 3)), "not uniform"),
        (biased_scores(lambda n: 0.05 * torch.arange(n) / n), "not uniform"),
        (lambda b, n, m, generator=None: torch.zeros(b, m, dtype=torch.long), "repeats an id"),
        (lambda b, n, m, generator=None: random_mask(b, n, m, generator).int(), "dtype"),
        (lambda b, n, m, generator=None: random_mask(b, n, m, generator).T, "shape"),
        (lambda b, n, m, generator=None: random_mask(b, n, m, generator) + 1, r"outside \[0"),
        (lambda b, n, m: random_mask(b, n, m), "unexpected keyword argument 'generator'"),
        (not_implemented, "not implemented yet"),
    ],
)
def test_wrong_random_mask(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        ch03.check_random_mask(wrong)


def transposed_frequency(mask_ids, f_dim, t_dim):
    return masking_frequency(mask_ids, f_dim, t_dim).flatten().view(t_dim, f_dim).T


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda m, f, t: masking_frequency(m, f, t) * m.shape[0], "returns counts"),
        (transposed_frequency, "id = f_row \\* t_dim \\+ t_col"),
        (lambda m, f, t: masking_frequency(m, f, t).flatten(), "reshape"),
        (lambda m, f, t: masking_frequency(m, f, t).double(), "dtype"),
        (lambda m, f, t: masking_frequency(m, f, t) + 0.01, "wrong values"),
        (not_implemented, "not implemented yet"),
    ],
)
def test_wrong_masking_frequency(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        ch03.check_masking_frequency(wrong)
