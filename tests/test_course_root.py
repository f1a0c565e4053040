"""Runs live in the learner's checkout, not beside the installed package.

Two clones sharing one editable install (or a site-packages install) must not write into one
folder: the notebooks find their checkout from the working directory JupyterLab starts their
kernel in (``ssast_teach.course_root()``).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

import ssast_teach

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((REPO / "chapters").glob("[0-9][0-9]_*.ipynb"))


def make_clone(root: Path) -> Path:
    """A stand-in for a second clone: the project's pyproject.toml and a chapters folder."""
    (root / "chapters").mkdir(parents=True)
    (root / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    return root


def test_course_root_is_the_checkout_the_kernel_starts_in(tmp_path):
    clone = make_clone(tmp_path / "elsewhere" / "clone")
    code = (
        "import json, ssast_teach; r = ssast_teach.course_root(); "
        "print(json.dumps([ssast_teach.__file__, str(r), "
        "ssast_teach.shown_path(r / 'runs' / '06_pretraining' / 'pretrained.pth')]))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # the package installed from this folder
    out = subprocess.run([sys.executable, "-c", code], cwd=clone / "chapters", env=env,
                         capture_output=True, text=True, check=True).stdout
    package, root, shown = json.loads(out)
    assert Path(package).resolve().is_relative_to(REPO)
    assert Path(root) == clone.resolve()
    assert shown == "runs/06_pretraining/pretrained.pth"


def test_outside_any_checkout_the_working_directory_is_the_root(tmp_path):
    assert ssast_teach.course_root(tmp_path) == tmp_path.resolve()


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_no_chapter_finds_its_runs_from_the_package_location(path):
    sources = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    assert not [s for s in sources if "ssast_teach.__file__" in s], (
        f"{path.name}: locate runs with ssast_teach.course_root(), not the package's folder"
    )
