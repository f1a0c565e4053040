"""Shared test helpers.

A test that needs something absent (a package, a browser, a dataset) calls :func:`needs`.
Under ``CI=true`` that is a failure, so nothing is skipped silently in CI; elsewhere it is a
skip whose reason says how to get the missing piece.
"""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def needs(available: bool, what: str, how: str) -> None:
    """Fail under CI, else skip, when ``available`` is false."""
    if available:
        return
    message = f"{what} is not available; {how}"
    if IN_CI:
        pytest.fail(f"CI=true and {message}")
    pytest.skip(message)


def _touch(path: str) -> None:
    Path(path).write_text("the pickle ran code")


class RunsCode:
    """Pickled, this object runs code when unpickled: it creates the file ``marker``. Put it in
    a checkpoint to prove that a loader refuses the file and never runs the payload."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (_touch, (self.marker,))


@pytest.fixture(autouse=True)
def _seed_torch():
    import torch

    torch.manual_seed(0)
    yield


@pytest.fixture
def grading(monkeypatch):
    """Checkers as in a graded run: a stub's check raises instead of reporting and going on."""
    from ssast_teach.exercises import GRADING_ENV

    monkeypatch.setenv(GRADING_ENV, "1")
