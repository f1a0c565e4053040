"""Release and grading of the chapters as assignments (``ssast_teach.assignments``).

Most tests use a tiny two-exercise notebook built here (each kernel run costs seconds); the
released-chapter test runs over every chapter in chapters/, and the end-to-end tests (full
marks, one exercise filled in, nbgrader agreeing) over one real chapter.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from conftest import REPO, needs
from ssast_teach import assignments
from ssast_teach.assignments import find_chapter, grade, nbgrader_meta, release, release_notebook

CHAPTERS = REPO / "chapters"
E2E_CHAPTER = "03"  # the real chapter of the end-to-end tests: the fastest at ci scale
# A chapter's cells take seconds at ci scale; the bound matters because under ipykernel 7 a widget
# cell's reply sometimes stalls until the kernel is interrupted (seen with 03_masking under load).
CELL_TIMEOUT = 120
HAS_NBGRADER = importlib.util.find_spec("nbgrader") is not None and shutil.which("nbgrader")
NBGRADER_HOW = "install the test extra: pip install -e '.[test]' (it has nbgrader)"

EX1_SOLUTION = '''def double(x):
    """Return 2 * x."""
    ### BEGIN SOLUTION
    return 2 * x
    ### END SOLUTION'''
EX1_CHECK = """import torch
from ssast_teach.exercises import call_student, check_tensor, passed
x = torch.arange(3.0)
check_tensor("double(x)", call_student(double, x, case="x = arange(3)"), 2 * x)
passed(0, 1, "double doubles")
### BEGIN HIDDEN TESTS
y = torch.randn(5, generator=torch.Generator().manual_seed(0))
case = "a seeded randn(5)"
check_tensor("double(y)", call_student(double, y, case=case), 2 * y, case=case)
### END HIDDEN TESTS"""
EX2_SOLUTION = '''class Scaler:
    """Multiply by a fixed factor."""

    def __init__(self, factor):
        self.factor = factor

    def __call__(self, x):
        """Return factor * x."""
        ### BEGIN SOLUTION
        return self.factor * x
        ### END SOLUTION'''
EX2_CHECK = """x = torch.ones(2)
check_tensor("Scaler(3)(x)", call_student(Scaler(3.0), x, case="factor 3"), 3 * x)
passed(0, 2, "Scaler scales")
### BEGIN HIDDEN TESTS
x = torch.arange(4.0)
check_tensor("Scaler(-0.5)(x)", call_student(Scaler(-0.5), x, case="factor -0.5"), -0.5 * x)
### END HIDDEN TESTS"""


def solution_cell(source: str, grade_id: str):
    meta = {"grade": False, "solution": True, "locked": False, "grade_id": grade_id}
    return new_code_cell(source, metadata={"nbgrader": {**meta, "schema_version": 3}})


def check_cell(source: str, grade_id: str, points: int):
    meta = {"grade": True, "solution": False, "locked": True, "grade_id": grade_id}
    return new_code_cell(
        source, metadata={"nbgrader": {**meta, "points": points, "schema_version": 3}}
    )


def fixture_notebook() -> nbformat.NotebookNode:
    """An executed-looking instructor notebook: two exercises, 2 + 3 points, hidden checks."""
    nb = new_notebook(
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        }
    )
    nb.cells = [
        new_markdown_cell("# Chapter 00: Fixture"),
        new_code_cell(
            "import ssast_teach\nCOURSE_SCALE = ssast_teach.course_scale()\n"
            'print(f"COURSE_SCALE = {COURSE_SCALE}")'
        ),
        new_markdown_cell("Exercise 1: write `double(x)`."),
        solution_cell(EX1_SOLUTION, "fx-ex1-solution"),
        check_cell(EX1_CHECK, "fx-ex1", 2),
        new_markdown_cell("Exercise 2: finish `Scaler`."),
        solution_cell(EX2_SOLUTION, "fx-ex2-solution"),
        check_cell(EX2_CHECK, "fx-ex2", 3),
        new_markdown_cell("## Summary"),
    ]
    for count, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        cell.execution_count = count + 1
        cell.outputs = [new_output("stream", name="stdout", text="an old output\n")]
        cell.metadata["execution"] = {"iopub.status.idle": "2026-01-01T00:00:00Z"}
    return nb


def write(nb: nbformat.NotebookNode, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def cell_by_id(nb: nbformat.NotebookNode, grade_id: str) -> nbformat.NotebookNode:
    return next(c for c in nb.cells if nbgrader_meta(c).get("grade_id") == grade_id)


def scores(report: assignments.GradeReport) -> dict[str, float]:
    return {e.grade_id: e.points for e in report.exercises}


def error_outputs(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> dict:
    """The fixture's source, its release, the release with exercise 2 filled in, and graded
    reports shared between tests (each grading starts a kernel)."""
    root = tmp_path_factory.mktemp("course")
    source = write(fixture_notebook(), root / "chapters" / "00_fixture.ipynb")
    (released,) = release(["0"], root / "release", chapters_dir=source.parent)
    filled = nbformat.read(released, as_version=4)
    cell_by_id(filled, "fx-ex2-solution").source = EX2_SOLUTION
    one = write(filled, root / "one" / "00_fixture.ipynb")
    return {"root": root, "source": source, "released": released, "one": one, "reports": {}}


def graded(course: dict, which: str) -> assignments.GradeReport:
    if which not in course["reports"]:
        course["reports"][which] = grade(
            course[which], course["source"], scale="ci", timeout=CELL_TIMEOUT
        )
    return course["reports"][which]


# ---------------------------------------------------------------------------- release


def test_release_stubs_solutions_and_removes_hidden_checks(course):
    source_bytes = course["source"].read_bytes()
    nb = nbformat.read(course["released"], as_version=4)
    nbformat.validate(nb)
    assert cell_by_id(nb, "fx-ex1-solution").source == (
        'def double(x):\n    """Return 2 * x."""\n'
        "    # YOUR CODE HERE\n    raise NotImplementedError()"
    )
    method = cell_by_id(nb, "fx-ex2-solution").source
    assert method.endswith(
        '        """Return factor * x."""\n'
        "        # YOUR CODE HERE\n        raise NotImplementedError()"
    )
    assert "self.factor = factor" in method  # code outside the markers is kept
    check = cell_by_id(nb, "fx-ex1").source
    assert check.startswith(EX1_CHECK.split("### BEGIN HIDDEN TESTS")[0].rstrip("\n"))
    text = json.dumps(nb)
    for gone in ("SOLUTION", "HIDDEN", "seeded randn(5)", "return 2 * x", "an old output"):
        assert gone not in text
    for cell in nb.cells:
        assert cell.get("outputs", []) == [] and cell.get("execution_count") is None
        assert "execution" not in cell.metadata
    assert nbgrader_meta(cell_by_id(nb, "fx-ex2"))["points"] == 3
    assert course["source"].read_bytes() == source_bytes
    assert [p.name for p in course["released"].parent.iterdir()] == ["00_fixture.ipynb"]


def test_find_chapter_by_name_number_and_path(tmp_path):
    for name in ("01_audio", "03_masking", "03_more"):
        write(fixture_notebook(), tmp_path / f"{name}.ipynb")
    assert find_chapter("01_audio", tmp_path) == tmp_path / "01_audio.ipynb"
    assert find_chapter("1", tmp_path) == tmp_path / "01_audio.ipynb"
    assert find_chapter("01_audio.ipynb", tmp_path) == tmp_path / "01_audio.ipynb"
    assert find_chapter(str(tmp_path / "03_more.ipynb"), tmp_path) == tmp_path / "03_more.ipynb"
    with pytest.raises(ValueError, match="ambiguous"):
        find_chapter("3", tmp_path)
    with pytest.raises(FileNotFoundError, match="chapters there: 01_audio"):
        find_chapter("07_finetune", tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.ipynb"):
        find_chapter(tmp_path / "nope.ipynb", tmp_path)


def test_release_all_chapters_and_refuse_the_source_folder(tmp_path):
    chapters = tmp_path / "chapters"
    for name in ("01_a", "02_b"):
        write(fixture_notebook(), chapters / f"{name}.ipynb")
    before = {p: p.read_bytes() for p in chapters.iterdir()}
    written = release([], tmp_path / "out", chapters_dir=chapters)
    assert [p.name for p in written] == ["01_a.ipynb", "02_b.ipynb"]
    for out in (chapters, chapters / "released", tmp_path / "x" / ".." / "chapters"):
        with pytest.raises(ValueError, match="instructor notebooks"):
            release([], out, chapters_dir=chapters)
    elsewhere = write(fixture_notebook(), tmp_path / "mine" / "01_a.ipynb")
    with pytest.raises(ValueError, match="instructor notebooks"):
        release([elsewhere], elsewhere.parent, chapters_dir=chapters)
    assert {p: p.read_bytes() for p in chapters.iterdir()} == before


def _bad(edit) -> nbformat.NotebookNode:
    nb = fixture_notebook()
    edit(nb)
    return nb


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda nb: setattr(nb.cells[3], "source", EX1_SOLUTION[:-17]), "never closed"),
        (lambda nb: setattr(nb.cells[3], "source", "def f():\n    pass"), "without '### BEGIN"),
        (lambda nb: nb.cells[1].__setitem__("source", EX1_SOLUTION), "outside a solution cell"),
        (lambda nb: nb.cells[1].__setitem__("source", EX1_CHECK), "hidden tests outside"),
        (lambda nb: nb.cells[7].metadata.nbgrader.update(grade_id="fx-ex1"), "used twice"),
        (lambda nb: nb.cells[7].metadata.nbgrader.pop("points"), "points must be"),
        (lambda nb: nb.cells[4].metadata.nbgrader.pop("grade_id"), "without a grade_id"),
    ],
)
def test_release_rejects_broken_sources_and_writes_nothing(tmp_path, edit, message):
    chapters = tmp_path / "chapters"
    write(fixture_notebook(), chapters / "00_good.ipynb")
    write(_bad(edit), chapters / "01_bad.ipynb")
    with pytest.raises(ValueError, match=message):
        release([], tmp_path / "out", chapters_dir=chapters)
    assert not (tmp_path / "out").exists()


def test_release_notebook_leaves_its_input_alone():
    nb = fixture_notebook()
    before = json.dumps(nb, sort_keys=True)
    release_notebook(nb)
    assert json.dumps(nb, sort_keys=True) == before


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    from ssast_teach import download

    target = tmp_path / "scores.json"
    target.write_text("old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(download.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        download.atomic_write(target, lambda tmp: tmp.write_text("new"))
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["scores.json"]


def test_command_line_release_and_bad_input(tmp_path, capsys):
    chapters = tmp_path / "chapters"
    write(fixture_notebook(), chapters / "00_fixture.ipynb")
    argv = ["--chapters", str(chapters), "release", "00_fixture", "--out", str(tmp_path / "o")]
    assert assignments.main(argv) == 0
    assert (tmp_path / "o" / "00_fixture.ipynb").is_file()
    assert assignments.main(["--chapters", str(chapters), "release", "9", "--out", "x"]) == 2
    assert "no chapter '9'" in capsys.readouterr().err
    assert assignments.main(["grade", str(tmp_path / "missing.ipynb")]) == 2
    assert "missing.ipynb does not exist" in capsys.readouterr().err


# ---------------------------------------------------------------------------- grade


def test_grade_instructor_notebook_gives_full_marks_with_json(course, tmp_path):
    out = tmp_path / "lms" / "scores.json"
    env = {k: v for k, v in os.environ.items() if k != "COURSE_SCALE"}  # default scale: ci
    run = subprocess.run(
        [sys.executable, "-m", "ssast_teach.assignments", "grade", str(course["source"])]
        + ["--source", str(course["source"]), "--json", str(out), "--timeout", str(CELL_TIMEOUT)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "Total: 5/5" in run.stdout
    scores_json = json.loads(out.read_text())
    assert scores_json["chapter"] == "00_fixture" and scores_json["scale"] == "ci"
    assert (scores_json["total"], scores_json["max"]) == (5.0, 5.0)
    first = scores_json["exercises"][0]
    assert first == {
        "grade_id": "fx-ex1",
        "points": 2.0,
        "max_points": 2.0,
        "passed": True,
        "feedback": "✓ ch00 exercise 1: double doubles",
    }


def test_grade_released_notebook_gives_zero(course):
    report = grade(course["released"], course["source"], scale="paper", timeout=CELL_TIMEOUT)
    assert scores(report) == {"fx-ex1": 0, "fx-ex2": 0} and report.max == 5
    assert "COURSE_SCALE = paper" in report.executed.cells[1].outputs[0].text
    for exercise in report.exercises:
        assert not exercise.passed
        assert "NotImplementedYet" in exercise.feedback and "not implemented yet" in exercise.feedback
    assert all(o.ename == "NotImplementedYet" for o in error_outputs(report.executed))


def test_grade_one_exercise_filled_in_gives_its_points(course):
    report = graded(course, "one")
    assert scores(report) == {"fx-ex1": 0, "fx-ex2": 3}
    assert report.total == 3 and report.to_dict()["total"] == 3
    assert "Total: 3/5" in report.summary()


def test_grade_always_runs_the_instructor_checks(course, tmp_path):
    nb = nbformat.read(course["released"], as_version=4)
    # Exercise 1 hard-codes the visible case and guts its check cell: the hidden case fails.
    cell_by_id(nb, "fx-ex1-solution").source = "def double(x):\n    return torch.tensor([0., 2, 4])"
    cell_by_id(nb, "fx-ex1").source = 'print("✓ trust me")'
    # Exercise 2 is right, but its check cell was deleted: the instructor's is put back.
    cell_by_id(nb, "fx-ex2-solution").source = EX2_SOLUTION
    nb.cells.remove(cell_by_id(nb, "fx-ex2"))
    report = grade(write(nb, tmp_path / "00_fixture.ipynb"), course["source"], timeout=CELL_TIMEOUT)
    assert scores(report) == {"fx-ex1": 0, "fx-ex2": 3}
    assert "a seeded randn(5)" in report.exercises[0].feedback
    assert "missing from the submission" in report.exercises[1].feedback


def test_grade_reports_a_broken_cell_upstream_and_a_timeout(tmp_path):
    """A plain notebook (no torch, so that a 3 s cell timeout is enough)."""
    source = new_notebook(metadata=fixture_notebook().metadata)
    source.cells = [
        solution_cell(
            "def one():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION", "a"
        ),
        check_cell("assert one() == 1", "a-check", 1),
        solution_cell(
            "def two():\n    ### BEGIN SOLUTION\n    return 2\n    ### END SOLUTION", "b"
        ),
        check_cell("assert two() == 2", "b-check", 2),
        new_code_cell("print('after the exercises')"),
    ]
    source_path = write(source, tmp_path / "chapters" / "05_plain.ipynb")
    submission = release_notebook(source)
    submission.cells[0].source = "def one()\n    return 1"  # a syntax error
    submission.cells[2].source = "def two():\n    while True:\n        pass"
    path = write(submission, tmp_path / "alice" / "05_plain.ipynb")
    report = grade(path, chapters_dir=source_path.parent, timeout=3)  # source from the name
    assert report.chapter == "05_plain" and scores(report) == {"a-check": 0, "b-check": 0}
    first, second = (e.feedback for e in report.exercises)
    assert first.startswith("NameError: name 'one' is not defined")
    assert "an earlier cell failed: cell 1 (a) raised SyntaxError" in first
    assert second.startswith("timed out: the cell ran longer than 3 s")
    assert report.executed.cells[-1].outputs[0].text == "after the exercises\n"


# ---------------------------------------------------------------------------- real chapters


@pytest.mark.slow
@pytest.mark.parametrize(
    "chapter", sorted(CHAPTERS.glob("*.ipynb")) or [None], ids=lambda p: p.stem if p else "none"
)
def test_released_chapter_runs_with_only_the_stubs_failing(chapter, tmp_path):
    needs(chapter is not None, "chapter notebooks", "write chapters/NN_name.ipynb first")
    (released,) = release([chapter], tmp_path)
    if assignments.graded_cells(nbformat.read(chapter, as_version=4)):
        report = grade(released, chapter, scale="ci", timeout=CELL_TIMEOUT)
        executed = report.executed
        assert report.total == 0
        for exercise in report.exercises:
            assert "not implemented yet" in exercise.feedback, exercise
    else:  # a chapter without exercises: its release must simply run
        from nbclient import NotebookClient

        executed = nbformat.read(released, as_version=4)
        NotebookClient(executed, timeout=CELL_TIMEOUT, kernel_name="python3", allow_errors=True,
                       resources={"metadata": {"path": str(tmp_path)}}).execute(
            env={**os.environ, "COURSE_SCALE": "ci"})  # fmt: skip
    for error in error_outputs(executed):
        assert error.ename == "NotImplementedError" or (
            error.ename == "NotImplementedYet" and "not implemented yet" in error.evalue
        ), f"{chapter.name}: {error.ename}: {error.evalue}"


@pytest.fixture(scope="module")
def e2e(tmp_path_factory) -> dict:
    """One real chapter: its release with the last exercise filled in from the source."""
    matches = sorted(CHAPTERS.glob(f"{E2E_CHAPTER}_*.ipynb"))
    needs(bool(matches), f"chapter {E2E_CHAPTER}", "write that chapter first")
    source = matches[0]
    root = tmp_path_factory.mktemp("e2e")
    (released,) = release([source], root / "release")
    nb = nbformat.read(released, as_version=4)
    instructor = nbformat.read(source, as_version=4)
    grade_id, points, index = assignments.graded_cells(instructor)[-1]
    solution = [c for c in instructor.cells[:index] if nbgrader_meta(c).get("solution")][-1]
    cell_by_id(nb, nbgrader_meta(solution)["grade_id"]).source = solution.source
    one = write(nb, root / "one" / source.name)
    return {
        "source": source,
        "released": released,
        "one": one,
        "root": root,
        "grade_id": grade_id,
        "points": points,
    }


@pytest.mark.slow
def test_real_chapter_instructor_full_and_one_exercise_exact(e2e):
    full = grade(e2e["source"], e2e["source"], scale="ci", timeout=CELL_TIMEOUT)
    assert full.total == full.max > 0, full.summary()
    e2e["one_report"] = report = grade(e2e["one"], e2e["source"], scale="ci", timeout=CELL_TIMEOUT)
    assert report.total == e2e["points"], report.summary()
    assert {e.grade_id for e in report.exercises if e.passed} == {e2e["grade_id"]}


# ---------------------------------------------------------------------------- nbgrader


def nbgrader(root: Path, *args: str) -> None:
    run = subprocess.run(
        ["nbgrader", *args], cwd=root, env={**os.environ, "COURSE_SCALE": "ci"},
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]


@pytest.mark.slow
def test_nbgrader_releases_and_autogrades_a_chapter_like_we_do(e2e):
    """nbgrader's course layout: source/<assignment>/<notebook>.ipynb, then
    generate_assignment (-> release/) and autograde (submitted/<student>/ -> gradebook.db)."""
    needs(bool(HAS_NBGRADER), "nbgrader", NBGRADER_HOW)
    from nbgrader.api import Gradebook

    root, source, name = e2e["root"] / "nbgrader", e2e["source"], e2e["source"].name
    write(nbformat.read(source, as_version=4), root / "source" / "ch" / name)
    (root / "nbgrader_config.py").write_text(
        f"c = get_config()\nc.CourseDirectory.course_id = 'ssast'\nc.Execute.timeout = {CELL_TIMEOUT}\n"
    )
    nbgrader(root, "generate_assignment", "ch", "--force")
    theirs = nbformat.read(root / "release" / "ch" / name, as_version=4)
    ours = nbformat.read(e2e["released"], as_version=4)
    assert [(c.cell_type, c.source) for c in theirs.cells] == [
        (c.cell_type, c.source) for c in ours.cells
    ]
    write(nbformat.read(e2e["one"], as_version=4), root / "submitted" / "alice" / "ch" / name)
    nbgrader(root, "autograde", "ch", "--create", "--force")
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        submission = gradebook.find_submission_notebook(source.stem, "ch", "alice")
        theirs_scores = {g.name: g.score for g in submission.grades}
    report = e2e.get("one_report") or grade(e2e["one"], source, scale="ci", timeout=CELL_TIMEOUT)
    assert theirs_scores == {e.grade_id: e.points for e in report.exercises}


def test_committed_student_edition_is_a_fresh_release():
    from ssast_teach.assignments import stale_student_edition

    stale = stale_student_edition()
    assert not stale, (
        f"chapters/student/ is stale ({stale}): run python -m ssast_teach.assignments "
        "student-edition and commit it"
    )


def test_student_edition_links_reach_their_targets():
    import re

    from ssast_teach.assignments import CHAPTERS_DIR, STUDENT_EDITION

    student = CHAPTERS_DIR / STUDENT_EDITION
    for path in sorted(student.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type != "markdown":
                continue
            for target in re.findall(r"\]\(([^)\s#]+)", cell.source):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                    continue
                assert (student / target).exists(), f"{path.name} links {target}, which is missing"
