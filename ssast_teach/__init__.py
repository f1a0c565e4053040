"""ssast-teach: the Self-Supervised Audio Spectrogram Transformer, built step by step.

The library follows the chapters: ``audio`` (01) -> ``datasets`` (01, 06) -> ``patches`` (02)
-> ``masking`` (03) -> ``model`` (04) -> ``losses`` (05) -> ``checkpoints`` (08) ->
``pretrain`` (06) / ``finetune`` (07). ``ablations`` (09), ``exercises``, ``assignments`` and
``bench`` sit on top.
Importing the package is cheap: it pulls in no torch code until a module is imported.
"""

import os

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
