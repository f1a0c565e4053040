"""What holds for every chapter in both editions: prose free of control characters, outputs free
of this machine's absolute paths, the core written by the learner (a solution cell followed by
its graded check), a predict-then-run question, and the README's numbers matching the code."""

import re

import nbformat
import pytest

from conftest import REPO

CHAPTERS = sorted((REPO / "chapters").glob("[0-9][0-9]_*.ipynb"))
STUDENT = sorted((REPO / "chapters" / "student").glob("[0-9][0-9]_*.ipynb"))
# control characters other than tab and newline: a "\v" or "\a" typed into a Python string
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# an absolute path of some machine's file system (a home, a checkout, a temporary folder)
ABSOLUTE = re.compile(r"(?<![\w.:/])/(?:home|root|tmp|work|Users|mnt|opt|var|private)/[\w.-]+")


def _id(path):
    return f"{path.parent.name}/{path.stem}"


@pytest.mark.parametrize("path", CHAPTERS + STUDENT, ids=_id)
def test_markdown_has_no_control_characters(path):
    nb = nbformat.read(path, as_version=4)
    for index, cell in enumerate(nb.cells):
        found = CONTROL.search(cell.source)
        assert not found, f"{_id(path)} cell {index} holds control character {found.group()!r}"


@pytest.mark.parametrize("path", CHAPTERS, ids=_id)
def test_outputs_print_no_absolute_paths(path):
    nb = nbformat.read(path, as_version=4)
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            texts = [output.get("text", "")] + [
                v for k, v in output.get("data", {}).items() if k.startswith("text/")
            ]
            for text in texts:
                text = "".join(text) if isinstance(text, list) else text
                found = ABSOLUTE.search(text)
                assert not found, f"{_id(path)} cell {index} prints {found.group()!r}"


@pytest.mark.parametrize("path", [p for p in CHAPTERS if not p.name.startswith("00_")], ids=_id)
def test_the_learner_writes_the_core_and_predicts(path):
    nb = nbformat.read(path, as_version=4)
    meta = [c.metadata.get("nbgrader", {}) for c in nb.cells]
    solutions = [i for i, m in enumerate(meta) if m.get("solution")]
    assert solutions, f"{_id(path)} has no solution cell"
    for i in solutions:
        assert i + 1 < len(nb.cells) and meta[i + 1].get("grade"), (
            f"{_id(path)} cell {i} ({meta[i]['grade_id']}) is not followed by its graded check"
        )
    predict = [i for i, c in enumerate(nb.cells) if re.search(r"^my_prediction = None", c.source, re.M)]
    assert predict, f"{_id(path)} has no predict-then-run question (my_prediction = None)"
    assert any("reveal(" in c.source for c in nb.cells[predict[0] + 1:]), (
        f"{_id(path)}: no cell after the prediction reveals the answer"
    )


def test_readme_counts_the_released_checkpoints_from_the_registry():
    from ssast_teach.checkpoints import REGISTRY

    readme = (REPO / "README.md").read_text()
    assert f"the {len(REGISTRY)} released checkpoints" in readme


def test_instructors_guide_states_each_chapters_points():
    text = (REPO / "chapters" / "INSTRUCTORS.md").read_text()
    stated = dict(re.findall(r"(\d\d): (\d+)", text.split("A chapter is worth")[1].split("(")[0]))
    for path in CHAPTERS:
        nb = nbformat.read(path, as_version=4)
        points = sum(c.metadata.get("nbgrader", {}).get("points", 0) for c in nb.cells
                     if c.metadata.get("nbgrader", {}).get("grade"))
        if points:
            assert float(stated.get(path.name[:2], -1)) == points, (path.name, points, stated)
