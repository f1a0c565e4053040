"""Release the chapters as assignments and grade what students hand back (on top of the
chapters' exercises, ``ssast_teach.exercises``).

The chapters are the instructor source. A solution cell holds the function to write, its body
between ``### BEGIN SOLUTION`` and ``### END SOLUTION``; a graded check cell (nbgrader metadata
``grade: true``, ``grade_id``, ``points``) calls a checker, and may end with hidden checks
between ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS``. Release and grading follow
nbgrader's rules, so the same chapters also work with ``nbgrader generate_assignment`` and
``nbgrader autograde`` (see ``chapters/INSTRUCTORS.md``)::

    python -m ssast_teach.assignments release 3 04_model --out handout/
    python -m ssast_teach.assignments grade alice/03_masking.ipynb --json alice-03.json
    python -m ssast_teach.assignments student-edition          # rewrite chapters/student/
    python -m ssast_teach.assignments student-edition --check  # exit 1 if it is stale

The **student edition** (``chapters/student/``) is the release of every chapter, committed: the
worked edition (``chapters/``, executed) and the student edition come from one source, and a
test keeps the committed copy identical to a fresh release.

Grading runs the submission in a separate, limited process and the check cells in this one
(``ssast_teach.grading``), so nothing the submission does can forge a verdict; code that
reaches the library's own solution, the checkers or the grader's environment is listed for
review. It runs at ``COURSE_SCALE=ci`` unless ``--scale`` or the ``COURSE_SCALE`` variable says
otherwise: the checkers run their own seeded cases, so the scale only sets how long the
chapter's demonstration cells take.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import posixpath
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat
from nbformat import NotebookNode
from nbformat.v4 import new_output

from ssast_teach import COURSE_SCALES, course_root, course_scale
from ssast_teach.download import atomic_write

CHAPTERS_DIR = Path(__file__).resolve().parents[1] / "chapters"
STUDENT_EDITION = "student"  # the committed student edition: chapters/student/
# nbgrader's default stubs, so that our release and ``nbgrader generate_assignment`` agree
CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
TEXT_STUB = "YOUR ANSWER HERE"
SOLUTION = ("BEGIN SOLUTION", "END SOLUTION")  # matched anywhere in a line, as nbgrader does
HIDDEN_TESTS = ("BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
# Seconds per cell: a submission's cell or a check cell (all its calls together) that runs longer
# is stopped, and a check cell stopped scores 0.
DEFAULT_TIMEOUT = 300
FEEDBACK_CHARS = 600


# ---------------------------------------------------------------------------- the source


def nbgrader_meta(cell: NotebookNode) -> dict:
    """The cell's ``nbgrader`` metadata (empty for an ordinary cell)."""
    return cell.get("metadata", {}).get("nbgrader", {})


def graded_cells(nb: NotebookNode, where: str = "notebook") -> list[tuple[str, float, int]]:
    """``(grade_id, points, cell index)`` of each graded check cell, after checking the metadata."""
    seen: set[str] = set()
    graded = []
    for index, cell in enumerate(nb.cells):
        meta = nbgrader_meta(cell)
        if not (meta.get("grade") or meta.get("solution")):
            continue
        grade_id = meta.get("grade_id")
        label = f"{where}, cell {index}"
        if not grade_id:
            raise ValueError(f"{label}: nbgrader cell without a grade_id")
        if grade_id in seen:
            raise ValueError(f"{label}: grade_id {grade_id!r} is used twice")
        seen.add(grade_id)
        if not meta.get("grade"):
            continue
        if meta.get("solution") or cell.cell_type != "code":
            raise ValueError(
                f"{label} ({grade_id}): a graded cell must be a code cell that is not also a "
                "solution cell (answers graded by hand need nbgrader's formgrader)"
            )
        points = meta.get("points")
        if isinstance(points, bool) or not isinstance(points, int | float) or points <= 0:
            raise ValueError(
                f"{label} ({grade_id}): points must be a positive number, got {points!r}"
            )
        graded.append((grade_id, float(points), index))
    return graded


def list_chapters(chapters_dir: Path = CHAPTERS_DIR) -> list[Path]:
    """The chapter notebooks ``NN_name.ipynb`` in ``chapters_dir``, in order."""
    if not Path(chapters_dir).is_dir():
        raise FileNotFoundError(f"chapters folder {chapters_dir} does not exist")
    return sorted(Path(chapters_dir).glob("*.ipynb"))


def find_chapter(name: str | os.PathLike, chapters_dir: Path = CHAPTERS_DIR) -> Path:
    """A chapter notebook from its name (``03_masking``), number (``3``) or path (a bare file
    name like ``03_masking.ipynb`` is also looked for in ``chapters_dir``)."""
    text = os.fspath(name)
    path = Path(text)
    if path.suffix == ".ipynb" and path.parent == Path(".") and not path.is_file():
        path = Path(chapters_dir) / text
    if path.suffix == ".ipynb" or path.parent != Path("."):
        if not path.is_file():
            raise FileNotFoundError(f"notebook {path} does not exist")
        return path
    if text.isdigit():
        matches = sorted(Path(chapters_dir).glob(f"{int(text):02d}_*.ipynb"))
    else:
        matches = [p for p in [Path(chapters_dir) / f"{text}.ipynb"] if p.is_file()]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ValueError(f"chapter {text!r} is ambiguous: {', '.join(p.name for p in matches)}")
    known = ", ".join(p.stem for p in list_chapters(chapters_dir)) or "none"
    raise FileNotFoundError(f"no chapter {text!r} in {chapters_dir} (chapters there: {known})")


# ---------------------------------------------------------------------------- release


def _cut(source: str, markers: tuple[str, str], stub: str | None, where: str) -> tuple[str, bool]:
    """Replace each marked region of ``source`` (marker lines included) by ``stub``, indented
    like its BEGIN line, or remove it when ``stub`` is None. Returns the text and whether a
    region was found."""
    begin, end = markers
    kept: list[str] = []
    inside = found = False
    for line in source.split("\n"):
        if begin in line:
            if inside:
                raise ValueError(f"{where}: a second '{begin}' before '{end}'")
            inside = found = True
            indent = line[: len(line) - len(line.lstrip())]
            kept += [indent + s for s in stub.split("\n")] if stub is not None else []
        elif end in line:
            if not inside:
                raise ValueError(f"{where}: '{end}' without '{begin}'")
            inside = False
        elif not inside:
            kept.append(line)
    if inside:
        raise ValueError(f"{where}: '{begin}' is never closed by '{end}'")
    return "\n".join(kept), found


def clear_outputs(nb: NotebookNode) -> None:
    """Drop outputs, execution counts and run metadata, in place (as nbconvert's ClearOutput)."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        for key in ("execution", "collapsed", "scrolled"):
            cell.metadata.pop(key, None)
    nb.metadata.pop("widgets", None)


def release_notebook(nb: NotebookNode, where: str = "notebook") -> NotebookNode:
    """The student version of an instructor notebook: each solution region replaced by a
    ``raise NotImplementedError()`` stub (signature and docstring kept), hidden checks removed,
    outputs cleared, nbgrader cells undeletable and check cells read-only. ``nb`` itself is not
    changed."""
    graded_cells(nb, where)
    out = copy.deepcopy(nb)
    for index, cell in enumerate(out.cells):
        meta = nbgrader_meta(cell)
        label = f"{where}, cell {index}" + (
            f" ({meta['grade_id']})" if meta.get("grade_id") else ""
        )
        stub = CODE_STUB if cell.cell_type == "code" else TEXT_STUB
        cell.source, solved = _cut(cell.source, SOLUTION, stub, label)
        if solved != bool(meta.get("solution")):
            raise ValueError(
                f"{label}: a solution region outside a solution cell"
                if solved
                else f"{label}: a solution cell without '### BEGIN SOLUTION' / '### END SOLUTION'"
            )
        cell.source, hidden = _cut(cell.source, HIDDEN_TESTS, None, label)
        if hidden and not meta.get("grade"):
            raise ValueError(f"{label}: hidden tests outside a graded cell")
        if meta.get("solution") or meta.get("grade") or meta.get("locked"):
            cell.metadata["deletable"] = False  # as nbgrader's LockCells: Jupyter enforces these
        if not meta.get("solution") and (meta.get("grade") or meta.get("locked")):
            cell.metadata["editable"] = False
    clear_outputs(out)
    return out


def write_notebook(nb: NotebookNode, path: Path) -> None:
    """Write ``nb`` to ``path`` atomically."""
    text = notebook_text(nb)
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def release(
    chapters: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    chapters_dir: Path = CHAPTERS_DIR,
) -> list[Path]:
    """Write the student version of each chapter (all of ``chapters_dir`` when none is named)
    into ``out_dir``; return the paths written. Refuses to write where a source lives."""
    sources = [find_chapter(c, chapters_dir) for c in chapters] or list_chapters(chapters_dir)
    if not sources:
        raise FileNotFoundError(f"no chapter notebooks in {chapters_dir}")
    out = Path(out_dir)
    protected = {Path(chapters_dir).resolve(), *(s.resolve().parent for s in sources)}
    resolved = out.resolve()
    if any(p == resolved or p in resolved.parents for p in protected):
        raise ValueError(
            f"--out {out} is (inside) a folder of instructor notebooks; choose another folder, "
            "the sources must never be overwritten"
        )
    if len({s.name for s in sources}) != len(sources):
        raise ValueError("two chapters have the same file name: " + ", ".join(map(str, sources)))
    # Build every release before writing any, so a broken chapter leaves nothing half-released.
    released = [release_notebook(nbformat.read(s, as_version=4), str(s)) for s in sources]
    out.mkdir(parents=True, exist_ok=True)
    targets = [out / s.name for s in sources]
    for nb, target in zip(released, targets, strict=True):
        write_notebook(nb, target)
    return targets


MARKDOWN_LINK = re.compile(r"(\]\()([^)\s]+)(\))")


def relink(nb: NotebookNode, moved_to: str, keep: set[str]) -> None:
    """Rewrite, in place, the relative markdown links of a notebook moved into the subfolder
    ``moved_to`` so they still reach their targets; links to a name in ``keep`` (the
    notebooks moved with it) stay as they are."""

    def fix(match: re.Match) -> str:
        target = match.group(2)
        path, hash_, anchor = target.partition("#")
        if not path or path in keep or re.match(r"^[a-z][a-z0-9+.-]*:|^/", path):
            return match.group(0)
        moved = posixpath.relpath(path, moved_to)
        return f"{match.group(1)}{moved}{hash_}{anchor}{match.group(3)}"

    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = MARKDOWN_LINK.sub(fix, cell.source)


def student_edition(chapters_dir: Path = CHAPTERS_DIR) -> dict[str, NotebookNode]:
    """Every chapter released, its links fixed for ``chapters/student/``, by file name."""
    sources = list_chapters(chapters_dir)
    if not sources:
        raise FileNotFoundError(f"no chapter notebooks in {chapters_dir}")
    names = {s.name for s in sources}
    edition = {}
    for source in sources:
        nb = release_notebook(nbformat.read(source, as_version=4), str(source))
        relink(nb, STUDENT_EDITION, names)
        edition[source.name] = nb
    return edition


def notebook_text(nb: NotebookNode) -> str:
    """The file text of ``nb`` as the release tool writes it."""
    text = nbformat.writes(nb)
    return text if text.endswith("\n") else text + "\n"


def stale_student_edition(chapters_dir: Path = CHAPTERS_DIR) -> list[str]:
    """Names of the committed student notebooks that differ from a fresh release (or are
    missing, or have no chapter any more); empty when the edition is up to date."""
    out = Path(chapters_dir) / STUDENT_EDITION
    fresh = student_edition(chapters_dir)
    stale = [
        name for name, nb in fresh.items()
        if not (out / name).is_file()
        or (out / name).read_text(encoding="utf-8") != notebook_text(nb)
    ]
    extra = sorted(p.name for p in out.glob("*.ipynb") if p.name not in fresh)
    return stale + extra


def write_student_edition(chapters_dir: Path = CHAPTERS_DIR) -> list[Path]:
    """Rewrite ``chapters/student/`` from the chapters (built in full before anything is
    written); a student notebook whose chapter is gone is removed. Returns the paths written."""
    out = Path(chapters_dir) / STUDENT_EDITION
    fresh = student_edition(chapters_dir)
    out.mkdir(exist_ok=True)
    written = []
    for name, nb in fresh.items():
        text = notebook_text(nb)
        atomic_write(out / name, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))
        written.append(out / name)
    for orphan in out.glob("*.ipynb"):
        if orphan.name not in fresh:
            orphan.unlink()
    return written


# ---------------------------------------------------------------------------- grade


@dataclass
class ExerciseScore:
    """The score of one graded check cell."""

    grade_id: str
    points: float
    max_points: float
    passed: bool
    feedback: str


@dataclass
class ReviewItem:
    """Something a submission's code reaches that a grader should read by hand: the library's
    own implementation of an exercise, the checkers, ``sys.modules``, an exception hook, the
    environment (found by reading the code, so a reason to look, not a verdict)."""

    cell: int  # 1-based, in the graded notebook
    grade_id: str  # of the cell, "" for a cell the student added
    name: str  # the name the code used
    why: str


@dataclass
class GradeReport:
    """Scores of one submission; ``executed`` is the graded notebook (it holds the hidden
    checks: keep it away from students)."""

    chapter: str
    scale: str
    exercises: list[ExerciseScore]
    for_review: list[ReviewItem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # how it was graded, when that matters
    executed: NotebookNode | None = field(default=None, repr=False, compare=False)

    @property
    def total(self) -> float:
        return sum(e.points for e in self.exercises)

    @property
    def max(self) -> float:
        return sum(e.max_points for e in self.exercises)

    def to_dict(self) -> dict:
        """The JSON for an LMS: chapter, scale, exercises, total, max."""
        return {
            "chapter": self.chapter,
            "scale": self.scale,
            "exercises": [asdict(e) for e in self.exercises],
            "total": self.total,
            "max": self.max,
            "for_review": [asdict(r) for r in self.for_review],
            "notes": self.notes,
        }

    def summary(self) -> str:
        """One line per exercise, then the total."""
        width = max(len(e.grade_id) for e in self.exercises)
        lines = [f"{self.chapter} (graded at COURSE_SCALE={self.scale})"]
        for e in self.exercises:
            head = f"  {e.grade_id:<{width}}  {e.points:g}/{e.max_points:g}  "
            lines.append(head + e.feedback.replace("\n", "\n" + " " * len(head)))
        lines.append(f"Total: {self.total:g}/{self.max:g}")
        if self.for_review:
            lines.append("For review (read these cells before trusting the points):")
            for r in self.for_review:
                where = f"cell {r.cell}" + (f" ({r.grade_id})" if r.grade_id else "")
                lines.append(f"  {where}: {r.name}: {r.why}")
        lines += [f"Note: {note}" for note in self.notes]
        return "\n".join(lines)


def _source_for(notebook: Path, chapters_dir: Path) -> Path:
    """The instructor chapter a submission comes from, by its file name (``03_masking...``)."""
    stem = notebook.stem
    if (Path(chapters_dir) / f"{stem}.ipynb").is_file():
        return Path(chapters_dir) / f"{stem}.ipynb"
    number = stem[: len(stem) - len(stem.lstrip("0123456789"))]
    if number:
        return find_chapter(number, chapters_dir)
    raise ValueError(f"cannot tell which chapter {notebook} is from its name; pass --source")


def with_instructor_checks(
    submission: NotebookNode, source: NotebookNode, where: str = "source"
) -> tuple[NotebookNode, list[tuple[str, float, int]], set[str]]:
    """The notebook to execute: the submission with outputs cleared and every graded cell taken
    from the source (hidden checks included). A graded cell missing from the submission is put
    back after the submission's cell of the nearest earlier nbgrader cell of the source.
    Returns it, ``(grade_id, points, index)`` of its graded cells, and the ids put back."""
    nb = copy.deepcopy(submission)
    clear_outputs(nb)

    def index_of(grade_id: str) -> int | None:
        return next(
            (i for i, c in enumerate(nb.cells) if nbgrader_meta(c).get("grade_id") == grade_id),
            None,
        )

    restored = set()
    for grade_id, _, src_index in graded_cells(source, where):
        fresh = copy.deepcopy(source.cells[src_index])
        fresh.outputs, fresh.execution_count = [], None
        at = index_of(grade_id)
        if at is not None:
            nb.cells[at] = fresh
            continue
        restored.add(grade_id)
        earlier = [nbgrader_meta(c).get("grade_id") for c in source.cells[:src_index]]
        anchors = [index_of(g) for g in reversed(earlier) if g]
        at = next((i + 1 for i in anchors if i is not None), len(nb.cells))
        nb.cells.insert(at, fresh)
    placed = [(g, p, index_of(g)) for g, p, _ in graded_cells(source, where)]
    return nb, placed, restored


def _short(text: str) -> str:
    text = text.strip()
    return text if len(text) <= FEEDBACK_CHARS else text[: FEEDBACK_CHARS - 3] + "..."


def _outputs(run) -> list[NotebookNode]:
    """A cell's outputs in the executed notebook, from what running it gave."""
    outputs = []
    if run.stdout:
        outputs.append(new_output("stream", name="stdout", text=run.stdout))
    if run.stopped:
        outputs.append(new_output("error", ename="Stopped", evalue=run.stopped, traceback=[]))
    elif run.error:
        ename, evalue = run.error
        if ename == "stderr":
            outputs.append(new_output("stream", name="stderr", text=evalue))
        else:
            outputs.append(new_output("error", ename=ename, evalue=evalue, traceback=[]))
    return outputs


def check_points(run, shown: object, max_points: float) -> tuple[float, str]:
    """Points and feedback of a check cell, by nbgrader's rule: stopped (a timeout, the
    submission's process dying), an error or anything written to stderr scores 0; a number from
    0 to ``max_points`` as the cell's last expression is partial credit; otherwise full points."""
    if run.stopped:
        return 0.0, _short(run.stopped)
    if run.error:
        ename, evalue = run.error
        text = f"wrote to stderr: {evalue}" if ename == "stderr" else f"{ename}: {evalue}"
        return 0.0, _short(text)
    if isinstance(shown, int | float) and not isinstance(shown, bool):
        if 0.0 <= shown <= max_points:
            return float(shown), f"partial credit: the cell displayed {shown:g}"
    lines = dict.fromkeys(line for line in run.stdout.splitlines() if line.strip())
    return max_points, _short("\n".join(lines)) or "passed"


def _failed_before(nb: NotebookNode, index: int, graded: set[int]) -> str:
    """The first and the nearest earlier non-graded cells that raised an error, described."""
    failed = []
    for i, cell in enumerate(nb.cells[:index]):
        errors = [o for o in cell.get("outputs", []) if o.output_type == "error"]
        if errors and i not in graded:
            name = nbgrader_meta(cell).get("grade_id") or cell.source.strip().split("\n")[0][:60]
            failed.append(f"cell {i + 1} ({name}) raised "
                          + _short(f"{errors[0].ename}: {errors[0].evalue}"))
    if not failed:
        return ""
    if len(failed) == 1:
        return f"\nan earlier cell failed: {failed[0]}"
    return f"\nearlier cells failed, first {failed[0]}; last {failed[-1]}"


def grade(
    notebook: str | os.PathLike,
    source: str | os.PathLike | None = None,
    *,
    chapters_dir: Path = CHAPTERS_DIR,
    scale: str | None = None,
    timeout: int = DEFAULT_TIMEOUT,
    memory_mb: int | None = None,
) -> GradeReport:
    """Run a submitted notebook and score each of the instructor's graded check cells.

    The submission's cells run in a separate, limited process (``ssast_teach.grading``); the
    check cells, hidden checks included, run here, calling the submission's functions there and
    judging what comes back. ``source`` is the instructor chapter (name, number or path; by
    default found from the submission's file name). ``scale`` defaults to ``COURSE_SCALE``,
    else ``ci``. ``timeout`` is the limit of each cell in seconds, ``memory_mb`` the
    submission's address space (default ``grading.DEFAULT_MEMORY_MB``).
    """
    from ssast_teach import grading

    path = Path(notebook)
    if not path.is_file():
        raise FileNotFoundError(f"submission {path} does not exist")
    source_path = (
        find_chapter(source, chapters_dir)
        if source is not None
        else _source_for(path, chapters_dir)
    )
    scale = course_scale(default="ci") if scale is None else scale
    if scale not in COURSE_SCALES:
        raise ValueError(f"scale {scale!r} is not one of {', '.join(COURSE_SCALES)}")
    instructor = nbformat.read(source_path, as_version=4)
    if not graded_cells(instructor, str(source_path)):
        raise ValueError(f"{source_path} has no graded cells (nbgrader metadata grade: true)")
    try:
        submission = nbformat.read(path, as_version=4)
    except Exception as error:  # nbformat raises several types for a file that is no notebook
        raise ValueError(f"submission {path} is not a readable notebook: {error}") from error
    nb, placed, restored = with_instructor_checks(submission, instructor, str(source_path))
    graded = {index for _, _, index in placed}
    imports = grading.notebook_imports([c.source for c in instructor.cells if c.cell_type == "code"])
    grading.load_library(imports)  # the checkers as they are now, before any submission code runs
    # the submission's cells; in place of each check cell only its imports, which the
    # notebook's later cells may use as they would after Run All
    cells = [
        (i, grading.imports_only(c.source) if i in graded else c.source)
        for i, c in enumerate(nb.cells) if c.cell_type == "code"
    ]  # fmt: skip
    session = grading.GradingSession(
        [(i, source) for i, source in cells if source.strip()],
        scale=scale, timeout=timeout, course=course_root(path.resolve().parent),
        memory_mb=grading.DEFAULT_MEMORY_MB if memory_mb is None else memory_mb,
    )  # fmt: skip
    for _, _, index in placed:
        session.bind(grading.free_names(nb.cells[index].source), imports)
    review = _for_review(nb, instructor, placed, session.namespace)
    scores = []
    with grading.grader_environment():
        try:
            with contextlib.suppress(grading.GradingError):  # each check then says why
                session.start()
            checks = {index: session.run_check(nb.cells[index].source) for _, _, index in placed}
        finally:
            session.close()
    for index, run in [*session.runs.items(), *((i, r) for i, (r, _) in checks.items())]:
        nb.cells[index].outputs = _outputs(run)
        nb.cells[index].execution_count = index + 1
    for grade_id, max_points, index in placed:
        points, feedback = check_points(*checks[index], max_points)
        if points < max_points:
            feedback += _failed_before(nb, index, graded)
        if grade_id in restored:
            feedback += "\n(this check cell was missing from the submission; the instructor's ran)"
        scores.append(ExerciseScore(grade_id, points, max_points, points == max_points, feedback))
    return GradeReport(source_path.stem, scale, scores, review, session.notes, executed=nb)


def _for_review(
    nb: NotebookNode, instructor: NotebookNode, placed: list, namespace: dict
) -> list[ReviewItem]:
    """What the submission's own code (every code cell not verbatim the instructor's or the
    release's) reaches that a grader should read: see ``grading.for_review``."""
    from ssast_teach import grading

    library: dict[str, str] = {}
    for _, _, index in placed:
        library |= grading.library_references(nb.cells[index].source, namespace)
    theirs = {c.source for c in instructor.cells if c.cell_type == "code"}
    theirs |= {c.source for c in release_notebook(instructor).cells if c.cell_type == "code"}
    graded = {index for _, _, index in placed}
    items = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or i in graded or cell.source in theirs:
            continue
        for name, why in grading.for_review(cell.source, library):
            items.append(ReviewItem(i + 1, nbgrader_meta(cell).get("grade_id", ""), name, why))
    return items


# ---------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``release`` or ``grade``; returns the exit code (2 for bad input)."""
    parser = argparse.ArgumentParser(
        prog="python -m ssast_teach.assignments",
        description="Release the chapters as assignments; grade submitted notebooks.",
    )
    parser.add_argument(
        "--chapters", type=Path, default=CHAPTERS_DIR, help="instructor chapters folder"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    rel = commands.add_parser("release", help="write student notebooks (solutions stubbed)")
    rel.add_argument(
        "names", nargs="*", metavar="CHAPTER", help="03_masking, 3 or a path; none = all"
    )
    rel.add_argument("--out", required=True, type=Path, help="folder for the student notebooks")
    edition = commands.add_parser(
        "student-edition", help=f"rewrite chapters/{STUDENT_EDITION}/ from the chapters"
    )
    edition.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if the edition is stale"
    )
    grd = commands.add_parser(
        "grade",
        help="run a submission in a separate, limited process and score its exercises here",
        description="Run the submission's cells in a separate process (a temporary folder, no "
        "grader seed in its environment, limits on memory, processes and time; as user nobody "
        "when run as root) and the instructor's check cells, hidden checks included, in this "
        "one: each check calls the submission's functions there and judges the plain data "
        "that comes back. Code that reaches the library's own solution, the checkers, "
        "sys.modules, exception hooks or the environment is listed 'for review'. Running a "
        "submission is running untrusted code: grade in a container or as a throwaway user "
        "(chapters/INSTRUCTORS.md).",
    )
    grd.add_argument("notebook", type=Path, help="the submitted .ipynb")
    grd.add_argument("--source", help="instructor chapter (default: from the file name)")
    grd.add_argument("--json", type=Path, help="also write the scores as JSON here")
    grd.add_argument(
        "--scale", choices=COURSE_SCALES, help="COURSE_SCALE (default: $COURSE_SCALE, else ci)"
    )
    grd.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT, help="seconds per cell")
    grd.add_argument(
        "--memory", type=int, metavar="MIB",
        help="address space of the submission's process in MiB (default: 8192; 0: no limit)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        if args.command == "release":
            for path in release(args.names, args.out, args.chapters):
                print(f"released {path}")
            return 0
        if args.command == "student-edition":
            if args.check:
                stale = stale_student_edition(args.chapters)
                for name in stale:
                    print(f"stale: {STUDENT_EDITION}/{name}", file=sys.stderr)
                return 1 if stale else 0
            for path in write_student_edition(args.chapters):
                print(f"wrote {path}")
            return 0
        report = grade(
            args.notebook,
            args.source,
            chapters_dir=args.chapters,
            scale=args.scale,
            timeout=args.timeout,
            memory_mb=args.memory,
        )
        print(report.summary())
        if args.json is not None:
            text = json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n"
            atomic_write(args.json, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        return 0
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
