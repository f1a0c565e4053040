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


# ------------------------------------------------------- specifications, not dictation

SOLUTION_REGION = re.compile(r"### BEGIN SOLUTION\n(.*?)\n[ \t]*### END SOLUTION", re.S)
# an assignment's target, "=" or "+=" and the like included, but not "==", "<=", ">=", "!="
TARGET = re.compile(r"^[\w.,\[\]()'\"]+?(?://|\*\*|[-+*/@%|&])?=(?!=)")
NAME = re.compile(r"^[\w.,]*$")  # a bare name, attribute chain or tuple of names
SHORTEST = 10  # characters a solution line must keep, whitespace gone, to carry an idea
HINT_LABEL = re.compile(r"\bhints?\s*\d*\s*:|^\W*hints?\b", re.I | re.M)
DETAILS = re.compile(r"<details(\s[^>]*)?>(.*?)</details>", re.S | re.I)


def _code_of(line):
    """A solution line as the test compares it: comment, whitespace, and an assignment target
    or ``return`` removed."""
    quotes, cut = 0, len(line)
    for i, char in enumerate(line):
        quotes += char in "'\""
        if char == "#" and quotes % 2 == 0:
            cut = i
            break
    code = re.sub(r"\s+", "", line[:cut])
    code = code.removeprefix("return") if re.match(r"return\b", line.strip()) else code
    return TARGET.sub("", code, count=1)


def solution_lines(source):
    """The lines of a worked solution that would give it away, normalised by :func:`_code_of`.

    A line counts when at least ``SHORTEST`` (10) characters remain and they are more than a
    name: ``return x``, ``pass``, a lone bracket, ``else:``, ``heads = attn.num_heads`` (a name
    the contract itself gives) carry nothing a learner must find out; the shortest lines that
    do, such as ``s = x @ c.mT`` (``x@c.mT``, 6 characters) sit below the cut and are rare,
    while the lines dictating hints used to spell (``x @ c.transpose(1, 2)``, 18;
    ``torch.softmax(s, dim=-1)``, 20) sit well above it."""
    region = SOLUTION_REGION.search(source)
    assert region, "a solution cell without its ### BEGIN / END SOLUTION region"
    return [(line.strip(), code) for line in region.group(1).split("\n")
            if len(code := _code_of(line)) >= SHORTEST and not NAME.match(code)]


def instructions(nb, index):
    """What a learner sees of the exercise whose solution cell is ``nb.cells[index]``: the run
    of markdown cells just before it (hint blocks included) and the stub itself (signature,
    docstring, comments)."""
    start = index
    while start > 0 and nb.cells[start - 1].cell_type == "markdown":
        start -= 1
    return "\n".join(cell.source for cell in nb.cells[start : index + 1])


def _pairs():
    for student in STUDENT:
        worked = REPO / "chapters" / student.name
        if worked.is_file():
            yield pytest.param(worked, student, id=_id(student))


@pytest.mark.parametrize("worked, student", list(_pairs()))
def test_instructions_specify_and_never_dictate_the_solution(worked, student):
    """Every exercise's visible instructions in the student edition (the markdown just before
    the stub, and the stub's docstring and comments) hold none of its worked solution's lines
    (:func:`solution_lines`), compared with all whitespace removed."""
    worked_nb, student_nb = nbformat.read(worked, as_version=4), nbformat.read(student, as_version=4)
    solutions = {c.metadata["nbgrader"]["grade_id"]: c.source for c in worked_nb.cells
                 if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")}
    given_away = []
    for index, cell in enumerate(student_nb.cells):
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id not in solutions:
            continue
        shown = re.sub(r"\s+", "", instructions(student_nb, index))
        given_away += [f"{grade_id}: {line!r}" for line, code in solution_lines(solutions[grade_id])
                       if code in shown]
    assert not given_away, (f"{_id(student)}: instructions that dictate the solution line by line "
                            "(state the contract instead):\n  " + "\n  ".join(given_away))


@pytest.mark.parametrize("path", STUDENT, ids=_id)
def test_every_hint_is_optional_and_collapsed(path):
    """A hint sits in a ``<details><summary>...</summary>...</details>`` block, which JupyterLab
    renders closed (never ``<details open>``): the learner asks for it. No hint in a stub's
    comments, nor labelled ``Hint:`` in open prose."""
    nb = nbformat.read(path, as_version=4)
    found = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            found += [f"cell {index}: {line.strip()!r}" for line in cell.source.split("\n")
                      if re.match(r"\s*#\s*hints?\b", line, re.I)]
            continue
        for block in DETAILS.finditer(cell.source):
            if block.group(1) and re.search(r"\bopen\b", block.group(1), re.I):
                found.append(f"cell {index}: a <details open> block: hints start closed")
            if "<summary>" not in block.group(2):
                found.append(f"cell {index}: a <details> block without a <summary> to click")
        found += [f"cell {index}: {m.group()!r} outside a <details> block"
                  for m in HINT_LABEL.finditer(DETAILS.sub("", cell.source))]
    assert not found, f"{_id(path)}: hints not collapsed:\n  " + "\n  ".join(found)
