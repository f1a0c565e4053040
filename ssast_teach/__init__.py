"""ssast-teach: the Self-Supervised Audio Spectrogram Transformer, built step by step.

Imports flow one way, each module importing only modules to its left (chapter in brackets):
``quirks`` (03-07), ``stats`` (07, 09), ``download`` (01, 08), ``audio`` (01) -> ``datasets``
(01, 06) -> ``baselines`` (07, 09) -> ``patches`` (02) -> ``masking`` (03) -> ``losses`` (05) -> ``model`` (04) ->
``checkpoints`` (08) -> ``training`` (06, 07) -> ``pretrain`` (06) / ``finetune`` (07) ->
``evaluate`` (07, 09) -> ``ablations`` (09) / ``study`` (09); ``exercises`` on top of those,
then ``grading`` (its checks run outside the submission's process), then ``assignments``,
``bench``, ``export`` (08) and ``__main__``.

The losses come before the model because its pretraining heads compute them (chapter 05
teaches them after the encoder of chapter 04); ``tests/test_conventions.py`` keeps the code
to this order.

Importing the package is cheap: it pulls in no torch code until a module is imported. The
library logs through ``logging`` (logger ``ssast_teach``); :func:`log_to_stdout` shows its
INFO lines, as the command lines and the chapters do.
"""

import functools
import logging
import os
import subprocess
import sys
from pathlib import Path

__version__ = "0.1.0"

COURSE_SCALES = ("ci", "classroom", "paper")


def course_scale(default: str = "classroom") -> str:
    """The ``COURSE_SCALE`` environment variable, checked: one of ``ci``, ``classroom``, ``paper``."""
    scale = os.environ.get("COURSE_SCALE", default).strip().lower()
    if scale not in COURSE_SCALES:
        raise ValueError(
            f"COURSE_SCALE={scale!r} is not a course scale; expected one of {', '.join(COURSE_SCALES)}"
        )
    return scale


def course_root(start: str | os.PathLike | None = None) -> Path:
    """The checkout of ssast-teach that ``start`` (default: the working directory, where
    JupyterLab starts a notebook's kernel) lies in: the nearest folder at or above it whose
    ``pyproject.toml`` names the project. Runs are written there, in the learner's own clone,
    never beside the installed package, which two clones sharing one editable install (or a
    site-packages install) would share. Outside any checkout: ``start`` itself."""
    here = Path(start if start is not None else os.getcwd()).expanduser().resolve()
    for folder in (here, *here.parents):
        project = folder / "pyproject.toml"
        if project.is_file() and 'name = "ssast-teach"' in project.read_text(errors="replace"):
            return folder
    return here


def shown_path(path: str | os.PathLike) -> str:
    """``path`` as a log line or a notebook output shows it: relative to the learner's checkout
    (:func:`course_root`) or the package's when inside one, else with the home folder written
    ``~``, so that no committed output holds one machine's absolute path."""
    resolved = Path(path).expanduser().resolve()
    bases = (course_root(), Path(__file__).resolve().parents[1], Path.home())
    for base, prefix in zip(bases, ("", "", "~/"), strict=True):
        try:
            return prefix + resolved.relative_to(base).as_posix()
        except ValueError:
            continue
    return str(path)


@functools.cache
def code_version() -> str:
    """The library's version as results record it: ``__version__``, then, in a git checkout,
    ``+g<commit>`` of the last commit that changed the package (``.dirty`` when the package
    has uncommitted changes). Two results made with different library code then say so, even
    where ``__version__`` did not change; outside a checkout (an installed wheel), or without
    git, only ``__version__``."""
    package = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(package), *args, "--", "."], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()

    try:
        commit = git("log", "-1", "--format=%h")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return __version__
    if not commit:
        return __version__
    return f"{__version__}+g{commit}{'.dirty' if dirty else ''}"


def log_to_stdout(level: int | str = logging.INFO, logger: str = "ssast_teach") -> logging.Logger:
    """Print the library's log lines on stdout, message only: all of them, or those of one
    module's logger (``"ssast_teach.ablations"``: one line per ablation run).

    Idempotent: a second call changes the level, not the number of handlers.
    """
    logger = logging.getLogger(logger)
    logger.setLevel(level)
    if not any(isinstance(h, _StdoutHandler) for h in logger.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    return logger


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is when a line is logged (a notebook cell's output,
    pytest's capture), not the one of the moment the handler was made."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass
