"""``python -m ssast_teach check-env``: one [OK]/[FAIL] line per requirement, exit 1 on a FAIL."""

import re

import pytest

from ssast_teach.__main__ import main

LINE = re.compile(r"^\[(OK|FAIL)\] [^:\n]+: .+$")
REQUIREMENTS = [
    "Python",
    "torch",
    "torchaudio fbank",
    "timm",
    "soundfile",
    "jupyterlab",
    "ipywidgets",
    "CUDA",
    "data: ESC-10",
    "data: FSDD",
    "data: Speech Commands mini",
]


def _run(capsys, argv):
    code = main(argv)
    lines = capsys.readouterr().out.splitlines()
    assert all(LINE.match(line) for line in lines), lines
    assert [line.split("] ", 1)[1].split(":")[0] for line in lines] == [
        r.split(":")[0] for r in REQUIREMENTS
    ]
    assert code == int(any(line.startswith("[FAIL]") for line in lines))
    return code, lines


def test_check_env_prints_one_line_per_requirement(capsys):
    _, lines = _run(capsys, ["check-env"])
    cuda = next(line for line in lines if "] CUDA:" in line)
    assert cuda.startswith("[OK]")  # no GPU is not a failure
    assert next(line for line in lines if "] Python:" in line).startswith("[OK]")


def test_missing_data_fails_with_exit_code_1(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("SSAST_TEACH_DATA", str(tmp_path))
    code, lines = _run(capsys, ["check-env"])
    assert code == 1
    assert all(line.startswith("[FAIL]") for line in lines if "] data:" in line)


def test_a_command_is_required(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
