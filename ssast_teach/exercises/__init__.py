"""Checkers for the chapters' exercises (one module per chapter: ``ch01`` ... ``ch09``).

A checker runs the student's function on seeded cases, compares it with the library's answer
and either prints one ``✓`` line or raises :class:`ExerciseError` naming what is wrong (shape,
dtype, values, or the failing case and the exception the student's code raised). It never
stops the kernel: an exception in a notebook cell is just a red cell the student can fix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

Mistake = tuple[str, torch.Tensor]  # (what the student probably did, what that gives)


class ExerciseError(AssertionError):
    """A wrong answer, explained. nbgrader counts any exception in a graded cell as a fail."""


def call_student(fn: Callable[..., Any], *args: Any, case: str, **kwargs: Any) -> Any:
    """Run the student's ``fn``; turn whatever it raises into an :class:`ExerciseError`."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise ExerciseError(
            f"{getattr(fn, '__name__', 'your function')} is not implemented yet "
            f"(it raised NotImplementedError on {case})"
        ) from None
    except Exception as error:  # noqa: BLE001 - any bug in student code becomes feedback
        raise ExerciseError(
            f"{getattr(fn, '__name__', 'your function')} raised "
            f"{type(error).__name__}: {error} on {case}"
        ) from None


def check_tensor(
    name: str,
    got: Any,
    expected: torch.Tensor,
    *,
    case: str = "",
    atol: float = 1e-5,
    rtol: float = 1e-5,
    check_dtype: bool = True,
) -> None:
    """Compare a student's tensor with the expected one: type, shape, dtype, then values."""
    where = f" on {case}" if case else ""
    if not isinstance(got, torch.Tensor):
        raise ExerciseError(f"{name}{where} should be a torch.Tensor, got {type(got).__name__}")
    if tuple(got.shape) != tuple(expected.shape):
        raise ExerciseError(
            f"{name}{where} has shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
        )
    if check_dtype and got.dtype != expected.dtype:
        raise ExerciseError(f"{name}{where} has dtype {got.dtype}, expected {expected.dtype}")
    got_cmp = got.detach().to(device="cpu", dtype=torch.float64)
    exp_cmp = expected.detach().to(device="cpu", dtype=torch.float64)
    if not torch.allclose(got_cmp, exp_cmp, atol=atol, rtol=rtol, equal_nan=False):
        diff = (got_cmp - exp_cmp).abs()
        worst = int(diff.flatten().argmax())
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), diff.shape))
        raise ExerciseError(
            f"{name}{where} has the right shape but wrong values: max |difference| "
            f"{diff.max().item():.3g} at index {index} (got {got_cmp[index].item():.6g}, "
            f"expected {exp_cmp[index].item():.6g})"
        )


def check_with_hints(
    name: str,
    got: object,
    expected: torch.Tensor,
    mistakes: Sequence[Mistake],
    *,
    case: str,
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> None:
    """:func:`check_tensor`, and if the values are wrong but equal a known mistake, say which."""
    try:
        check_tensor(name, got, expected, case=case, atol=atol, rtol=rtol)
    except ExerciseError as error:
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
            raise
        got64 = got.detach().cpu().double()
        hints = [
            hint
            for hint, wrong in mistakes
            if torch.allclose(got64, wrong.detach().cpu().double(), atol=atol, rtol=rtol)
        ]
        if not hints:
            raise
        raise ExerciseError(f"{error} -- it looks like {'; or '.join(hints)}") from None


def passed(chapter: int, exercise: int, what: str) -> None:
    """Print the one success line of a checker (deterministic, so nbval may compare it)."""
    print(f"✓ ch{chapter:02d} exercise {exercise}: {what}")
