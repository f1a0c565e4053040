"""The limits on a submission's process (``ssast_teach.grading``): a cell that never ends, an
allocation without bound and forked processes are stopped, the grade says why, and nothing is
left behind. One plain notebook (no torch in its cells, so that short limits are enough)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from ssast_teach import grading
from ssast_teach.assignments import grade, release_notebook

pytestmark = pytest.mark.slow
KERNEL = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}


def solution(name: str, body: str, grade_id: str):
    source = f"def {name}():\n    ### BEGIN SOLUTION\n{body}\n    ### END SOLUTION"
    meta = {"grade": False, "solution": True, "locked": False, "grade_id": grade_id}
    return new_code_cell(source, metadata={"nbgrader": {**meta, "schema_version": 3}})


def check(source: str, grade_id: str):
    meta = {"grade": True, "solution": False, "locked": True, "grade_id": grade_id,
            "points": 1, "schema_version": 3}  # fmt: skip
    return new_code_cell(source, metadata={"nbgrader": meta})


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def limited(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("limits")
    pids = root / "pids"
    pids.mkdir()
    pids.chmod(0o777)  # the worker may run as user nobody
    source = new_notebook(metadata=KERNEL)
    source.cells = [
        solution("loops", "    return 1", "a"),
        check("assert loops() == 1", "a-check"),
        solution("allocates", "    return 2", "b"),
        check("assert allocates() == 2", "b-check"),
        solution("forks", "    return 3", "c"),
        check("assert forks() == 3", "c-check"),
        solution("fine", "    return 4", "d"),
        check("assert fine() == 4", "d-check"),
    ]
    source_path = root / "chapters" / "07_plain.ipynb"
    source_path.parent.mkdir()
    nbformat.write(source, source_path)
    submission = release_notebook(source)
    submission.cells[0].source = "while True:\n    pass"  # a cell that never ends
    submission.cells[2].source = (
        "import mmap\n\ndef allocates():\n"
        "    return len(mmap.mmap(-1, 6 << 30))"  # 6 GiB, more than the limit below
    )
    submission.cells[4].source = (
        "import os, subprocess, time\n\ndef forks():\n"
        f"    folder = {str(pids)!r}\n"
        "    started = [subprocess.Popen(['sleep', '300'], start_new_session=True).pid]\n"
        "    for _ in range(5):\n"
        "        pid = os.fork()\n"
        "        if pid == 0:\n"
        "            os.setsid()\n"
        "            if os.fork():\n"
        "                os._exit(0)\n"  # a daemon: its parent exits, it is orphaned
        "            open(f'{folder}/{os.getpid()}', 'w').close()\n"
        "            time.sleep(300)\n"
        "            os._exit(0)\n"
        "        started.append(pid)\n"
        "    for pid in started:\n"
        "        open(f'{folder}/{pid}', 'w').close()\n"
        "    time.sleep(1)\n"
        "    while True:\n"
        "        pass"
    )
    submission.cells[6].source = "def fine():\n    return 4"
    path = root / "bob" / "07_plain.ipynb"
    path.parent.mkdir()
    nbformat.write(submission, path)
    before = set(Path(tempfile.gettempdir()).glob("ssast-grade-*"))
    start = time.monotonic()
    report = grade(path, chapters_dir=source_path.parent, timeout=8, memory_mb=4096)
    return {
        "report": report,
        "seconds": time.monotonic() - start,
        "pids": [int(p.name) for p in pids.iterdir()],
        "left": set(Path(tempfile.gettempdir()).glob("ssast-grade-*")) - before,
    }


def feedback(limited: dict) -> dict[str, tuple[float, str]]:
    return {e.grade_id: (e.points, e.feedback) for e in limited["report"].exercises}


def test_a_cell_that_never_ends_is_stopped_and_the_rest_is_graded(limited):
    points, text = feedback(limited)["a-check"]
    assert points == 0
    assert "cell 1 (a) raised Stopped: timed out: the cell ran longer than 8 s" in text, text
    assert feedback(limited)["d-check"][0] == 1  # a fresh process ran the cells after it


def test_an_allocation_past_the_memory_limit_fails(limited):
    points, text = feedback(limited)["b-check"]
    assert points == 0 and "the memory limit is 4096 MiB" in text, text


def test_forked_processes_are_all_stopped(limited):
    points, text = feedback(limited)["c-check"]
    assert points == 0 and text.startswith("timed out"), text
    assert len(limited["pids"]) == 11  # Popen, 5 forks, 5 daemons
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in limited["pids"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in limited["pids"] if alive(pid)]


def test_nothing_is_left_behind(limited):
    assert limited["left"] == set()


@pytest.mark.skipif(
    os.getuid() == 0 and not grading._nobody_can_run(),
    reason="RLIMIT_NPROC does not bind root, and user nobody cannot run this Python",
)
def test_a_fork_bomb_hits_the_process_limit(tmp_path):
    source = new_notebook(metadata=KERNEL)
    source.cells = [solution("bomb", "    return 1", "a"), check("assert bomb() == 1", "a-check")]
    source_path = tmp_path / "chapters" / "07_plain.ipynb"
    source_path.parent.mkdir()
    nbformat.write(source, source_path)
    submission = release_notebook(source)
    submission.cells[0].source = (
        "import os, time\n\ndef bomb():\n"
        "    for _ in range(100000):\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(300)\n"
        "            os._exit(0)\n"
        "    return 1"
    )
    path = tmp_path / "eve" / "07_plain.ipynb"
    path.parent.mkdir()
    nbformat.write(submission, path)
    report = grade(path, chapters_dir=source_path.parent, timeout=30)
    assert report.total == 0
    assert "BlockingIOError" in report.exercises[0].feedback, report.summary()
