"""Submissions that try to get the points without the work (``ssast_teach.grading``).

Each forgery is a chapter 03 student notebook with no real solution plus the forgery; it must
score 0 on the exercises it targets. A right submission (the worked solutions) scores full
marks, a half-right one exactly its points, and one that calls the library's own
``random_mask`` is listed for review. To keep them fast the notebooks hold the chapter's
first (imports) cell and its exercises, not its demonstrations; the full chapter is graded in
``tests/test_assignments.py``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import nbformat
import pytest

from conftest import REPO
from ssast_teach import assignments
from ssast_teach.assignments import grade, nbgrader_meta

pytestmark = pytest.mark.slow

SOURCE = REPO / "chapters" / "03_masking.ipynb"
STUDENT = REPO / "chapters" / "student" / "03_masking.ipynb"
TIMEOUT = 120
EXERCISES = {  # solution cell -> (check cell, points)
    "ch03-frame-mask": ("ch03-frame-mask-check", 1),
    "ch03-cluster-mask": ("ch03-cluster-mask-check", 2),
    "ch03-random-mask": ("ch03-random-mask-check", 2),
    "ch03-masking-frequency": ("ch03-masking-frequency-check", 1),
    "ch03-flat-mask": ("ch03-flat-mask-check", 2),
}


def short(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook's first code cell (its imports) and its nbgrader cells."""
    first = next(c for c in nb.cells if c.cell_type == "code")
    nb.cells = [first] + [c for c in nb.cells if nbgrader_meta(c)]
    return nb


def solution(grade_id: str, edition: Path = SOURCE) -> str:
    nb = nbformat.read(edition, as_version=4)
    return next(c.source for c in nb.cells if nbgrader_meta(c).get("grade_id") == grade_id)


def submission(tmp_path: Path, cells: dict[str, str] | None = None, after: str = "",
               first: str = "") -> Path:  # fmt: skip
    """The short student notebook with solution cells replaced (``cells``: grade_id ->
    source), ``after`` appended to the first code cell and ``first`` run as a cell before it."""
    nb = short(nbformat.read(STUDENT, as_version=4))
    for cell in nb.cells:
        grade_id = nbgrader_meta(cell).get("grade_id")
        if cells and grade_id in cells:
            cell.source = cells[grade_id]
    nb.cells[0].source += "\n" + after if after else ""
    if first:
        nb.cells.insert(0, nbformat.v4.new_code_cell(first))
    path = tmp_path / "alice" / "03_masking.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def graded(path: Path, **kwargs) -> assignments.GradeReport:
    before = set(Path(tempfile.gettempdir()).glob("ssast-grade-*"))
    report = grade(path, SOURCE, scale="ci", timeout=TIMEOUT, **kwargs)
    assert set(Path(tempfile.gettempdir()).glob("ssast-grade-*")) <= before  # folder removed
    return report


def scores(report: assignments.GradeReport) -> dict[str, float]:
    return {e.grade_id: e.points for e in report.exercises}


def zero(report: assignments.GradeReport) -> None:
    assert report.total == 0, report.summary()


def reviewed(report: assignments.GradeReport) -> set[str]:
    return {r.name for r in report.for_review}


# ---------------------------------------------------------------------------- the honest ones


def test_right_submission_scores_full_marks(tmp_path):
    cells = {sid: solution(sid) for sid in EXERCISES}
    report = graded(submission(tmp_path, cells))
    assert report.total == report.max == 8, report.summary()
    assert report.for_review == []


def test_half_right_submission_scores_exactly_its_points(tmp_path):
    cells = {"ch03-frame-mask": solution("ch03-frame-mask"),
             "ch03-random-mask": solution("ch03-random-mask")}  # fmt: skip
    report = graded(submission(tmp_path, cells))
    assert scores(report) == {
        "ch03-frame-mask-check": 1, "ch03-cluster-mask-check": 0, "ch03-random-mask-check": 2,
        "ch03-masking-frequency-check": 0, "ch03-flat-mask-check": 0,
    }, report.summary()  # fmt: skip


def test_delegating_to_the_library_is_listed_for_review(tmp_path, capsys):
    delegate = (
        "import ssast_teach.masking\n\n"
        "def random_mask(batch, num_patches, mask_patch, generator=None):\n"
        "    return ssast_teach.masking.random_mask(batch, num_patches, mask_patch, generator)"
    )
    path = submission(tmp_path, {"ch03-random-mask": delegate})
    out = tmp_path / "alice.json"
    code = assignments.main(["grade", str(path), "--source", str(SOURCE), "--scale", "ci",
                             "--json", str(out), "--timeout", str(TIMEOUT)])  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    assert report["total"] == 2  # it works: the points stand, a person decides
    (item,) = report["for_review"]
    assert item["name"] == "ssast_teach.masking.random_mask"
    assert item["grade_id"] == "ch03-random-mask" and "library's own" in item["why"]
    text = capsys.readouterr().out
    assert "For review" in text and f"cell {item['cell']} (ch03-random-mask)" in text


# ---------------------------------------------------------------------------- forgeries


def test_swallowing_exceptions_with_set_custom_exc_scores_zero(tmp_path):
    report = graded(submission(
        tmp_path, after="get_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)"
    ))  # fmt: skip
    zero(report)
    assert "set_custom_exc" in " ".join(reviewed(report))


def test_forged_checkers_in_sys_modules_score_zero(tmp_path):
    forge = (
        "import sys\nimport ssast_teach.exercises.ch03\n"
        "module = sys.modules['ssast_teach.exercises.ch03']\n"
        "for name in dir(module):\n"
        "    if name.startswith('check_'):\n"
        "        setattr(module, name, lambda f, *a, **k: f)\n"
        "import ssast_teach.exercises as ex\n"
        "ex.check_tensor = ex.check_with_hints = lambda *a, **k: None"
    )
    report = graded(submission(tmp_path, after=forge))
    zero(report)
    assert {"sys.modules", "ssast_teach.exercises.ch03"} <= reviewed(report)


def test_patched_torch_numpy_and_builtins_score_zero(tmp_path):
    forge = (
        "import builtins, numpy\n"
        "torch.allclose = torch.equal = lambda *a, **k: True\n"
        "numpy.allclose = numpy.array_equal = lambda *a, **k: True\n"
        "builtins.sorted = lambda x, *a, **k: list(x)\n"
        "def random_mask(batch, num_patches, mask_patch, generator=None):\n"
        "    return torch.zeros(batch, mask_patch, dtype=torch.long)\n"
        "def frame_mask_one_clip(num_patches, mask_patch, rng):\n"
        "    return list(range(mask_patch))"
    )
    zero(graded(submission(tmp_path, after=forge)))


def test_exiting_early_scores_zero(tmp_path):
    exits = {
        "ch03-frame-mask": "import os\n\ndef frame_mask_one_clip(num_patches, mask_patch, rng):\n"
                           "    os._exit(0)",
        "ch03-random-mask": "import sys\nsys.exit(0)",
    }  # fmt: skip
    report = graded(submission(tmp_path, exits))
    zero(report)
    frame = report.exercises[0].feedback
    assert "exited with code 0" in frame, frame
    assert {"os._exit", "sys.exit"} <= reviewed(report)


def test_objects_that_always_compare_equal_score_zero(tmp_path):
    forge = (
        "class Yes(list):\n"
        "    def __eq__(self, other): return True\n"
        "    def __ne__(self, other): return False\n"
        "    __hash__ = None\n"
        "class AnyTensor(torch.Tensor):\n"
        "    @classmethod\n"
        "    def __torch_function__(cls, func, types, args=(), kwargs=None):\n"
        "        return True\n"
        "def frame_mask_one_clip(num_patches, mask_patch, rng):\n"
        "    return Yes(range(mask_patch))\n"
        "def cluster_mask_one_clip(num_patches, mask_patch, t_dim, rng):\n"
        "    return Yes(range(1, mask_patch + 1))\n"
        "def random_mask(batch, num_patches, mask_patch, generator=None):\n"
        "    ids = torch.arange(mask_patch).repeat(batch, 1)\n"
        "    return ids.as_subclass(AnyTensor)\n"
        "def masking_frequency(mask_ids, f_dim, t_dim):\n"
        "    return torch.zeros(f_dim, t_dim).as_subclass(AnyTensor)"
    )
    zero(graded(submission(tmp_path, after=forge)))


def test_reading_the_grader_seed_scores_zero(tmp_path, monkeypatch):
    monkeypatch.setenv("SSAST_TEACH_GRADER_SEED", "12345")
    forge = (
        "import os\nfrom pathlib import Path\nimport ssast_teach.masking\n"
        "def seed():\n"
        "    if 'SSAST_TEACH_GRADER_SEED' in os.environ:\n"
        "        return os.environ['SSAST_TEACH_GRADER_SEED']\n"
        "    for pid in (os.getppid(), 1):\n"
        "        try:\n"
        "            text = Path(f'/proc/{pid}/environ').read_bytes()\n"
        "        except OSError:\n"
        "            continue\n"
        "        if b'SSAST_TEACH_GRADER_SEED' in text:\n"
        "            return 'seen'\n"
        "def random_mask(batch, num_patches, mask_patch, generator=None):\n"
        "    if seed() is None:\n"
        "        raise NotImplementedError\n"
        "    return ssast_teach.masking.random_mask(batch, num_patches, mask_patch, generator)"
    )
    report = graded(submission(tmp_path, after=forge))
    zero(report)
    assert "not implemented yet" in report.exercises[2].feedback
    assert "os.environ" in reviewed(report)


def test_writing_the_files_the_grader_reads_scores_zero(tmp_path):
    out = tmp_path / "alice.json"
    forge = (
        "import json, os\nfrom pathlib import Path\n"
        f"report = Path({str(out)!r})\n"
        "fake = {'chapter': '03_masking', 'total': 8, 'max': 8}\n"
        "for folder in (Path.cwd(), Path.home(), report.parent):\n"
        "    try:\n"
        "        (folder / 'ssast_teach' / 'exercises').mkdir(parents=True, exist_ok=True)\n"
        "        (folder / 'ssast_teach' / '__init__.py').write_text('')\n"
        "        (folder / 'ssast_teach' / 'exercises' / '__init__.py').write_text('')\n"
        "        (folder / 'ssast_teach' / 'exercises' / 'ch03.py').write_text(\n"
        "            'def __getattr__(name):\\n    return lambda f, *a, **k: f\\n')\n"
        "        (folder / 'sitecustomize.py').write_text('print(\"forged\")')\n"
        "    except OSError:\n"
        "        pass\n"
        "report.write_text(json.dumps(fake))"
    )
    path = submission(tmp_path, after=forge)
    code = assignments.main(["grade", str(path), "--source", str(SOURCE), "--scale", "ci",
                             "--json", str(out), "--timeout", str(TIMEOUT)])  # fmt: skip
    assert code == 0
    assert json.loads(out.read_text())["total"] == 0  # the grader's report, written after


def test_redirected_streams_score_zero(tmp_path):
    forge = (
        "import os, sys\n"
        "real = os.fdopen(os.dup(1), 'w')\n"
        "null = os.open(os.devnull, os.O_WRONLY)\n"
        "for fd in range(1, 64):\n"
        "    if fd != null:\n"
        "        try:\n"
        "            os.dup2(null, fd)\n"
        "        except OSError:\n"
        "            pass\n"
        "sys.stdout = sys.stderr = real\n"
        "print('\\u2713 ch03 exercise 1: frame_mask_one_clip draws the official frame mask')"
    )
    report = graded(submission(tmp_path, after=forge))
    zero(report)
    assert "exchange" in report.exercises[0].feedback or "exited" in report.exercises[0].feedback


def test_the_worker_environment_has_no_grader_secrets(tmp_path, monkeypatch):
    """The environment the submission sees, printed into its own output."""
    monkeypatch.setenv("SSAST_TEACH_GRADER_SEED", "777")
    monkeypatch.setenv("SOME_TOKEN", "secret")
    path = submission(tmp_path, first="import os\nprint(sorted(os.environ))")
    report = graded(path)
    shown = report.executed.cells[0].outputs[0].text
    assert "SSAST_TEACH_GRADER_SEED" not in shown and "SOME_TOKEN" not in shown
    assert "SSAST_TEACH_GRADING" in shown and os.environ["SSAST_TEACH_GRADER_SEED"] == "777"
