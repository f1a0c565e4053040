"""Checkers of chapters 02 and 03: the library's answers pass, wrong answers get a clear message."""

import pytest
import torch
import torch.nn.functional as F

from ssast_teach.exercises import ExerciseError, ch02, ch03
from ssast_teach.masking import frame_mask, masking_frequency, random_mask
from ssast_teach.patches import PatchGrid, fold_patches, unfold_patches

# graded behaviour: a stub's check raises (tests/test_exercises_common.py covers the other)
pytestmark = pytest.mark.usefixtures("grading")

HIDDEN = [False, True]


def not_implemented(*args, **kwargs):
    raise NotImplementedError()


# ---------------------------------------------------------------------------------------------
# Chapter 02


def library_grid_size(input_fdim, input_tdim, fshape, tshape, fstride, tstride):
    grid = PatchGrid(input_fdim, input_tdim, fshape, tshape, fstride, tstride)
    return grid.f_dim, grid.t_dim


@pytest.mark.parametrize("hidden", HIDDEN)
def test_library_answers_pass_ch02(hidden, capsys):
    ch02.check_grid_size(library_grid_size, hidden=hidden)
    ch02.check_unfold(unfold_patches, hidden=hidden)
    ch02.check_fold(fold_patches, hidden=hidden)
    lines = capsys.readouterr().out.splitlines()
    assert [line[:17] for line in lines] == [
        "✓ ch02 exercise 1",
        "✓ ch02 exercise 2",
        "✓ ch02 exercise 3",
    ]


def test_nn_unfold_passes_as_unfold():
    def with_nn_unfold(x, grid):
        unfold = torch.nn.Unfold((grid.fshape, grid.tshape), stride=(grid.fstride, grid.tstride))
        return unfold(x).transpose(1, 2)

    ch02.check_unfold(with_nn_unfold)
    ch02.check_unfold(with_nn_unfold, hidden=True)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (
            lambda fd, td, fs, ts, fst, tst: ((fd - fs) // fst, (td - ts) // tst),
            r"remember the \+1",
        ),
        (lambda *a: library_grid_size(*a)[::-1], "frequency comes first"),
        (lambda fd, td, fs, ts, fst, tst: (-(-fd // fst), -(-td // tst)), "must fit completely"),
        (lambda *a: [float(v) for v in library_grid_size(*a)], "pair of ints"),
        (not_implemented, "not implemented yet"),
    ],
)
def test_wrong_grid_size(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        ch02.check_grid_size(wrong)


def time_major_unfold(x, grid):
    p = unfold_patches(x, grid)  # (B, N, P)
    b = p.shape[0]
    return p.view(b, grid.f_dim, grid.t_dim, -1).transpose(1, 2).reshape_as(p)


def inner_transposed_unfold(x, grid):
    p = unfold_patches(x, grid)  # (B, N, P)
    return p.view(*p.shape[:2], grid.fshape, grid.tshape).transpose(2, 3).reshape_as(p)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda x, grid: unfold_patches(x, grid).transpose(1, 2), r"\(B, P, N\)"),
        (time_major_unfold, "time-major order"),
        (inner_transposed_unfold, "inside each patch"),
        (lambda x, grid: unfold_patches(x, grid).double(), "dtype"),
        (lambda x, grid: unfold_patches(x, grid)[:, :-1], "shape"),
        (lambda x, grid: unfold_patches(x, grid).numpy(), "torch.Tensor"),
        (lambda x, grid: unfold_patches(x, grid) + 1, "wrong values"),
        (lambda x, grid: 1 / 0, "ZeroDivisionError"),
        (not_implemented, "not implemented yet"),
    ],
)
def test_wrong_unfold(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        ch02.check_unfold(wrong)


def summing_fold(patches, grid):
    return F.fold(
        patches.transpose(1, 2),
        output_size=(grid.input_fdim, grid.input_tdim),
        kernel_size=(grid.fshape, grid.tshape),
        stride=(grid.fstride, grid.tstride),
    )


@pytest.mark.parametrize(
    "wrong, message",
    [
        (summing_fold, "you summed them"),
        (lambda patches, grid: fold_patches(patches, grid)[:, 0], "shape"),
        (lambda patches, grid: fold_patches(patches, grid) * 2, "wrong values"),
        (not_implemented, "not implemented yet"),
    ],
)
def test_wrong_fold(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        ch02.check_fold(wrong)


# ---------------------------------------------------------------------------------------------
# Chapter 03


def one_cluster(start, c, t_dim, num_patches, wrap_rows=True):
    """SPEC 4's inner loops for one start, written out (wrap_rows=False: the corrected flag)."""
    ids = set()
    for i in range(c):
        for j in range(c):
            cell = start + t_dim * i + j
            if 0 < cell < num_patches and (wrap_rows or start % t_dim + j < t_dim):
                ids.add(cell)
    return sorted(ids)


@pytest.mark.parametrize("hidden", HIDDEN)
def test_library_answers_pass_ch03(hidden, capsys):
    ch03.check_random_mask(random_mask, hidden=hidden)
    ch03.check_random_mask(frame_mask, hidden=hidden)
    ch03.check_masking_frequency(masking_frequency, hidden=hidden)
    ch03.check_cluster_ids(one_cluster, hidden=hidden)
    lines = capsys.readouterr().out.splitlines()
    assert [line[:17] for line in lines] == [
        "✓ ch03 exercise 1",
        "✓ ch03 exercise 1",
        "✓ ch03 exercise 2",
        "✓ ch03 exercise 3",
    ]


def test_random_mask_checker_leaves_global_rng_alone():
    torch.manual_seed(3)
    before = torch.rand(1)
    torch.manual_seed(3)
    ch03.check_random_mask(random_mask)
    assert torch.equal(torch.rand(1), before)


def global_rng_mask(batch, num_patches, mask_patch, generator=None):
    return random_mask(batch, num_patches, mask_patch)  # ignores the generator


def unsorted_mask(batch, num_patches, mask_patch, generator=None):
    scores = torch.rand(batch, num_patches, generator=generator)
    return scores.topk(mask_patch, dim=1).indices  # sorted by score, not by id


def with_replacement(batch, num_patches, mask_patch, generator=None):
    ids = torch.randint(num_patches, (batch, mask_patch), generator=generator)
    return ids.sort(dim=1).values


def never_zero(batch, num_patches, mask_patch, generator=None):
    if mask_patch >= num_patches:
        return random_mask(batch, num_patches, mask_patch, generator)
    ids = random_mask(batch, num_patches - 1, mask_patch, generator)
    return ids + 1  # id 0 never masked


def contiguous_block(batch, num_patches, mask_patch, generator=None):
    start = torch.randint(num_patches, (batch, 1), generator=generator)
    ids = (start + torch.arange(mask_patch)) % num_patches  # (B, M) a circular run
    return ids.sort(dim=1).values


@pytest.mark.parametrize(
    "wrong, message",
    [
        (global_rng_mask, "from two generators with the same seed"),
        (unsorted_mask, "not sorted"),
        (with_replacement, "WITHOUT replacement"),
        (never_zero, "not uniform"),
        (contiguous_block, "independently of their neighbours"),
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


def never_wraps(start, c, t_dim, num_patches, wrap_rows=True):
    return one_cluster(start, c, t_dim, num_patches, wrap_rows=False)


def always_wraps(start, c, t_dim, num_patches, wrap_rows=True):
    return one_cluster(start, c, t_dim, num_patches, wrap_rows=True)


def with_zero(start, c, t_dim, num_patches, wrap_rows=True):
    ids = one_cluster(start, c, t_dim, num_patches, wrap_rows)
    return [0, *ids] if start == 0 else ids


def past_the_end(start, c, t_dim, num_patches, wrap_rows=True):
    return one_cluster(start, c, t_dim, 10 * num_patches, wrap_rows)  # keeps ids >= num_patches


@pytest.mark.parametrize(
    "wrong, message",
    [
        (never_wraps, "wraps into the next row"),
        (always_wraps, "stops at the row end"),
        (lambda start, c, t_dim, n: one_cluster(start, c, t_dim, n), "wrap_rows"),
        (with_zero, "id 0 is never masked"),
        (past_the_end, "past the end of the grid"),
        (lambda *a, **k: one_cluster(*a, **k)[::-1], "unsorted or repeated"),
        (lambda *a, **k: [float(v) for v in one_cluster(*a, **k)], "list of ints"),
        (not_implemented, "not implemented yet"),
    ],
)
def test_wrong_cluster_ids(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        ch03.check_cluster_ids(wrong)


def test_cluster_ids_accepts_a_tensor():
    ch03.check_cluster_ids(lambda *a, **k: torch.tensor(one_cluster(*a, **k)))
