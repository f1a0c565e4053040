"""Checkers for the chapters' exercises (one module per chapter: ``ch01`` ... ``ch09``).

A checker runs the student's function on seeded cases, compares it with the library's answer
(or, for an open-ended extension, checks the properties any right answer has) and either
prints one ``✓`` line or raises :class:`ExerciseError` naming what is wrong (shape, dtype,
values, or the failing case and the exception the student's code raised). It never stops the
kernel: an exception in a notebook cell is just a red cell the student can fix.

Every public checker is wrapped by :func:`checker`. A stub that was never filled in (it raises
``NotImplementedError``) is reported as "not implemented yet" without an exception, so Run All
goes top to bottom on an untouched student notebook, and a checker given the library's version
of the function returns it, so the chapter goes on with it. Under grading
(``SSAST_TEACH_GRADING=1``, which ``python -m ssast_teach.assignments grade`` sets) the same
stub raises and scores zero. Hidden cases are drawn from :func:`hidden_seed`, which only the
grader sets (``SSAST_TEACH_GRADER_SEED``). Reference answers are private names (``_x``):
the exercise modules export checkers only.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

Mistake = tuple[str, torch.Tensor]  # (what the student probably did, what that gives)
GRADING_ENV = "SSAST_TEACH_GRADING"
GRADER_SEED_ENV = "SSAST_TEACH_GRADER_SEED"


class ExerciseError(AssertionError):
    """A wrong answer, explained. nbgrader counts any exception in a graded cell as a fail."""


class NotImplementedYet(ExerciseError):
    """The student's function is still the stub: it raised ``NotImplementedError``."""


def grading() -> bool:
    """True inside a graded run (``SSAST_TEACH_GRADING=1``): a stub then fails its check."""
    return os.environ.get(GRADING_ENV, "").lower() in ("1", "true", "yes")


def hidden_seed(default: int) -> int:
    """The seed of a checker's hidden cases: the grader's ``SSAST_TEACH_GRADER_SEED`` when set
    (so a student cannot precompute the cases of a graded run), else ``default``."""
    value = os.environ.get(GRADER_SEED_ENV)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{GRADER_SEED_ENV} must be an integer, got {value!r}") from None


def checker(reference: Callable[..., Any] | None = None):
    """Wrap a chapter's check ``check(fn, hidden=False)``.

    On a stub it prints "not implemented yet" (raises under :func:`grading` and with
    ``hidden=True``: a graded check cell runs its hidden cases first, then the visible
    check that rebinds the name, so nbgrader scores a stub zero too). With a
    ``reference`` (the library's version, same signature) the wrapped check returns the
    function the chapter should go on with: the student's when it passed, else ``reference``.
    Without one it returns None, so a check cell displays nothing but its ``✓`` line.
    """

    def wrap(check: Callable[..., None]) -> Callable[..., Any]:
        @functools.wraps(check)
        def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            try:
                check(fn, *args, **kwargs)
            except NotImplementedYet as error:
                # hidden cases run only in a graded run (ours or nbgrader's autograde, which
                # restore them), so they fail a stub even where the grading variable is unset
                if grading() or kwargs.get("hidden"):
                    raise
                then = (
                    "; the chapter goes on with the library's version" if reference else ""
                )
                print(f"… {error}{then}")
                return reference
            return fn if reference is not None else None

        run.reference = reference  # what the grader flags a solution for calling
        return run

    return wrap


def call_student(fn: Callable[..., Any], *args: Any, case: str, **kwargs: Any) -> Any:
    """Run the student's ``fn``; turn whatever it raises into an :class:`ExerciseError`
    (:class:`NotImplementedYet` for a stub)."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise NotImplementedYet(
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


def reveal(
    answer: Any,
    prediction: Any = None,
    *,
    agrees: Callable[[Any, Any], bool] | None = None,
) -> bool | None:
    """The second half of a predict-then-run question: print the measured ``answer`` beside the
    learner's ``prediction`` (``my_prediction``, None when they did not commit to one).
    ``agrees(prediction, answer)`` decides a match (default ``==``). Returns the match, or None."""
    print(f"answer: {answer}")
    if prediction is None:
        print("no prediction recorded: set my_prediction in the cell above, then run both again")
        return None
    right = bool(agrees(prediction, answer) if agrees is not None else prediction == answer)
    print(f"your prediction: {prediction}: {'right' if right else 'not this time, see why below'}")
    return right
