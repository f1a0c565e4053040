"""Command line: ``python -m ssast_teach <command>`` (or ``ssast-teach <command>``).

``check-env`` (chapter 01) prints one ``[OK]``/``[FAIL]`` line per requirement of the course and
exits with 1 if any failed.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys
from collections.abc import Callable, Sequence

from ssast_teach import shown_path

MIN_PYTHON = (3, 10)
INSTALL_HINT = "install the course with: pip install -e '.[course]'"
EXPECTED_CLIPS = {  # shipped course data: (sub-folder, file pattern, count)
    "ESC-10": ("esc10", "*/*.ogg", 400),
    "FSDD": ("fsdd/recordings", "*.wav", 2000),
    "Speech Commands mini": ("speech_commands_mini", "*/*.wav", 300),
}

Check = Callable[[], str]  # returns the detail of an [OK] line, raises for a [FAIL]


def _python() -> str:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] < MIN_PYTHON:
        raise RuntimeError(f"{version}, need >= {'.'.join(map(str, MIN_PYTHON))}")
    return f"{version} (need >= {'.'.join(map(str, MIN_PYTHON))})"


def _version_of(module: str) -> Check:
    def check() -> str:
        return importlib.import_module(module).__version__

    return check


def _installed(distribution: str) -> Check:
    """Version of an installed distribution, without importing it (jupyterlab takes seconds)."""

    def check() -> str:
        return importlib.metadata.version(distribution)

    return check


def _fbank() -> str:
    import torch

    from ssast_teach.audio import fbank

    frames = fbank(torch.randn(1, 16000)).shape
    if tuple(frames) != (98, 128):
        raise RuntimeError(f"1 s at 16 kHz gave {tuple(frames)}, expected (98, 128)")
    return "torchaudio.compliance.kaldi.fbank: 1 s -> (98, 128)"


def _timm() -> str:
    import timm
    import torch

    model = timm.create_model(
        "deit_tiny_distilled_patch16_224", pretrained=False, depth=1, img_size=32, num_classes=2
    ).eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    return f"{timm.__version__}, built a tiny DeiT"


def _cuda() -> str:
    import torch

    if not torch.cuda.is_available():
        return "not present, CPU will be used"
    return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"


def _data(name: str) -> Check:
    def check() -> str:
        from ssast_teach.datasets import data_dir

        folder, pattern, expected = EXPECTED_CLIPS[name]
        path = data_dir() / folder
        found = len(list(path.glob(pattern)))
        if found != expected:
            raise RuntimeError(f"{found} clips in {path}, expected {expected}")
        return f"{found} clips in {shown_path(path)}"

    return check


def _checks() -> list[tuple[str, Check]]:
    return [
        ("Python", _python),
        ("torch", _version_of("torch")),
        ("torchaudio fbank", _fbank),
        ("timm", _timm),
        ("soundfile", _version_of("soundfile")),
        ("jupyterlab", _installed("jupyterlab")),
        ("ipywidgets", _version_of("ipywidgets")),
        ("CUDA", _cuda),
        *((f"data: {name}", _data(name)) for name in EXPECTED_CLIPS),
    ]


def check_env() -> int:
    """Print one line per requirement; return 1 if any failed, else 0."""
    failed = False
    for name, check in _checks():
        try:
            print(f"[OK] {name}: {check()}")
        except Exception as err:  # any failure of a check is a [FAIL] line, not a traceback
            failed = True
            hint = f" ({INSTALL_HINT})" if isinstance(err, ImportError) else ""
            print(f"[FAIL] {name}: {type(err).__name__}: {err}{hint}")
    return int(failed)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return its exit code."""
    parser = argparse.ArgumentParser(prog="ssast-teach", description="Tools of the SSAST course.")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check-env", help="check Python, packages, CUDA and the data")
    check.set_defaults(run=check_env)
    args = parser.parse_args(argv)
    return args.run()


if __name__ == "__main__":
    sys.exit(main())
