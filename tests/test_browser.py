"""The course seen by a browser: the student's path through JupyterLab, and the worked edition.

nbval proves the kernel side of every chapter; these tests prove what a learner sees. The
student's loop, as the README's course command starts it: the student edition's start page
links every chapter; its link opens chapter 03; Run All reaches the last cell with no error, and
every check of an unwritten piece says "not implemented yet"; a correct solution typed into a
stub cell through the editor, then that cell and its check re-run, gives the ``✓`` line; the
mask explorer's slider, moved, redraws the figure. The worked edition's chapter 03 runs top to
bottom too, and its explorer redraws.

It starts ``jupyter lab`` on 127.0.0.1 with a token and its own port, over a copy of
``chapters/`` (the committed notebooks are never re-saved), with its own Jupyter config, data,
runtime, settings and workspace directories: a user's saved layout, open tabs or extensions
change nothing. Every notebook opens in a fresh, reset workspace, so exactly one notebook is on
screen. Waits are on the page's state (a cell's prompt, the kernel's status), never on sleeps.
Each step leaves a screenshot in ``test-artifacts/browser/``; a failing step says which step it
was, the screenshot's path and the notebook's visible error text. Select it with
``pytest -m browser``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, needs

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = REPO / "test-artifacts" / "browser"
CHAPTERS = REPO / "chapters"
MASKING = "03_masking.ipynb"
START = "00_start_here.ipynb"
WORKED, STUDENT = "chapters", "chapters/student"  # as the server (rooted like the README) sees them
STUB = "raise NotImplementedError()"
RUN_ALL_TIMEOUT_MS = 300_000


def _chromium() -> str | None:
    for candidate in (os.environ.get("SSAST_TEACH_CHROMIUM"), "/usr/bin/chromium"):
        if candidate and Path(candidate).exists():
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _isolated_env(root: Path) -> dict[str, str]:
    """Jupyter's per-user directories, all under ``root``: nothing of the runner's is read."""
    dirs = {
        "JUPYTER_CONFIG_DIR": root / "config",
        "JUPYTER_DATA_DIR": root / "data",
        "JUPYTER_RUNTIME_DIR": root / "runtime",
        "JUPYTERLAB_SETTINGS_DIR": root / "settings",
        "JUPYTERLAB_WORKSPACES_DIR": root / "workspaces",
        "IPYTHONDIR": root / "ipython",
    }
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "IPYTHON"))}
    env.update({k: str(v) for k, v in dirs.items()})
    env.update(COURSE_SCALE="ci", MPLBACKEND="module://matplotlib_inline.backend_inline")
    return env


def _lab_settings(settings: Path) -> None:
    # JupyterLab 4 renders only the cells in view by default; render them all so the test sees
    # every prompt and output, as a student scrolling through would.
    tracker = settings / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True)
    (tracker / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    news = settings / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 over a copy of the chapters; always stopped."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        playwright = None
    needs(playwright is not None, "playwright", 'install it with pip install -e ".[test]"')
    chromium = _chromium()
    needs(
        chromium is not None,
        "Chromium",
        "install Debian's browser with `sudo apt-get install -y chromium` "
        "(or point SSAST_TEACH_CHROMIUM at a Chromium/Chrome binary)",
    )
    root = tmp_path_factory.mktemp("lab")
    # rooted above chapters/, as the README's `jupyter lab --ServerApp.root_dir=. ...` is
    shutil.copytree(CHAPTERS, root / "chapters")
    env = _isolated_env(root / "jupyter")
    _lab_settings(Path(env["JUPYTERLAB_SETTINGS_DIR"]))
    port, token = _free_port(), secrets.token_hex(16)
    log_path = root / "jupyter.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed in the finaliser below
    server = subprocess.Popen(
        [
            sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
            f"--port={port}", "--port-retries=0", f"--IdentityProvider.token={token}",
            "--allow-root", f"--ServerApp.root_dir={root}",
            "--ServerApp.open_browser=False",
            f"--LabApp.user_settings_dir={env['JUPYTERLAB_SETTINGS_DIR']}",
            f"--LabApp.workspaces_dir={env['JUPYTERLAB_WORKSPACES_DIR']}",
            "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(f"jupyter lab did not start: {log_path.read_text()}")
                time.sleep(0.5)
        yield {"base": base, "token": token, "root": root, "chromium": chromium}
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=lab["chromium"],
            headless=True,
            args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
            ],
        )
        try:
            yield chromium
        finally:
            chromium.close()


class Walk:
    """One browser page in its own reset workspace, and the steps a learner takes in it.

    ``with walk.step("name"):`` screenshots the page when the step ends; when it fails, the
    error names the step, that screenshot and the notebook's visible error text."""

    def __init__(self, browser, lab, notebook: str, tag: str) -> None:
        self.lab, self.notebook, self.tag, self.count = lab, notebook, tag, 0
        for old in ARTIFACTS.glob(f"{tag}_[0-9][0-9]_*.png"):  # a previous run's, maybe a failure
            old.unlink()
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.page = self.context.new_page()
        self.page.set_default_timeout(60_000)

    @property
    def panel(self):
        """The notebook in view (others opened by a link stay in the DOM, hidden)."""
        return self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")

    def close(self) -> None:
        self.context.close()

    def shot(self, name: str) -> Path:
        self.count += 1
        path = ARTIFACTS / f"{self.tag}_{self.count:02d}_{name}.png"
        with contextlib.suppress(Exception):
            self.page.screenshot(path=str(path), full_page=True)
        return path

    def outputs(self, mime: str = "") -> list[str]:
        """The text of every output area in view (of one mime type when given)."""
        selector = ".jp-OutputArea-output" + (f"[data-mime-type='{mime}']" if mime else "")
        with contextlib.suppress(Exception):
            return self.panel.locator(selector).all_text_contents()
        return ["(the page could not be read)"]

    def visible_errors(self) -> list[str]:
        return [t for t in self.outputs("application/vnd.jupyter.stderr") if "Error" in t]

    @contextlib.contextmanager
    def step(self, name: str):
        try:
            yield
        except Exception as error:
            path = self.shot(f"FAILED_{name}")
            errors = self.visible_errors()
            shown = errors[0][:1500] if errors else "(no error output on the page)"
            raise AssertionError(
                f"{self.notebook}, step {name!r} failed: {type(error).__name__}: "
                f"{str(error)[:800]}\nscreenshot: {path}\nnotebook's visible error text: {shown}"
            ) from error
        self.shot(name)

    def open(self) -> None:
        # A fresh workspace with ?reset restores nothing: exactly this notebook is on screen.
        workspace = f"{self.tag}-{secrets.token_hex(4)}"
        self.page.goto(
            f"{self.lab['base']}/lab/workspaces/{workspace}/tree/{self.notebook}"
            f"?reset&token={self.lab['token']}"
        )
        self.panel.locator(".jp-Cell").first.wait_for(state="attached", timeout=90_000)
        self.wait_idle(90_000)
        opened = self.page.locator(".jp-NotebookPanel").count()
        assert opened == 1, f"{opened} notebooks open, expected 1"

    def follow(self, notebook: str) -> None:
        """Click the rendered link to ``notebook`` (a path under the server root) and wait
        until it is the notebook in view."""
        name = notebook.rsplit("/", 1)[-1]
        self.panel.locator(f".jp-RenderedMarkdown a[href*='{name}']").first.click()
        self.page.wait_for_selector(f".lm-TabBar-tab.jp-mod-current >> text={name}")
        self.notebook = notebook
        self.panel.locator(".jp-Cell").first.wait_for(state="attached", timeout=90_000)
        self.wait_idle(90_000)

    def wait_idle(self, timeout: int = 60_000) -> None:
        self.page.wait_for_selector("#jp-main-statusbar >> text=Idle", timeout=timeout)

    def links(self) -> list[str]:
        """The path part of every link rendered in the notebook in view."""
        hrefs = self.panel.locator(".jp-RenderedMarkdown a[href]").evaluate_all(
            "links => links.map(a => a.getAttribute('href'))"
        )
        # JupyterLab rewrites relative links to /files/<path>?_xsrf=...: keep the path part.
        return [h.split("#")[0].split("?")[0] for h in hrefs]

    def run_all(self) -> None:
        self.panel.locator(".jp-Notebook").click(position={"x": 5, "y": 5})
        self.page.keyboard.press("Escape")
        self.page.click("div.lm-MenuBar-itemLabel:text-is('Run')")
        self.page.click("li.lm-Menu-item[data-command='runmenu:run-all']")
        # Done when the last code cell has a number and no cell shows [*] (queued or running).
        self.page.wait_for_function(
            """(panel) => {
                const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
                return prompts.length > 0 && prompts.every(p => !p.textContent.includes('*'))
                    && /\\[\\d+\\]/.test(prompts[prompts.length - 1].textContent);
            }""",
            arg=self.panel.element_handle(),
            timeout=RUN_ALL_TIMEOUT_MS,
        )
        self.wait_idle()

    def cell(self, index: int):
        return self.panel.locator(".jp-Notebook .jp-Cell").nth(index)

    def run_cell(self, index: int) -> None:
        """Run one cell from its editor (Ctrl+Enter) and wait for its new execution count."""
        cell = self.cell(index)
        before = cell.locator(".jp-InputPrompt").text_content()
        cell.locator(".cm-content").click()
        self.page.keyboard.press("Control+Enter")
        self.page.wait_for_function(
            """([el, old]) => {
                const p = el.querySelector('.jp-InputPrompt').textContent;
                return p !== old && /\\[\\d+\\]/.test(p);
            }""",
            arg=[cell.element_handle(), before],
        )
        self.wait_idle()

    def save_and_read(self) -> dict:
        """Save with Ctrl+S and return the notebook as the server wrote it."""
        path = self.lab["root"] / self.notebook
        before = path.stat().st_mtime_ns
        self.page.keyboard.press("Control+s")
        deadline = time.monotonic() + 60
        while path.stat().st_mtime_ns == before:
            assert time.monotonic() < deadline, f"{path.name} was not saved within 60 s"
            time.sleep(0.2)
        for _ in range(50):  # the rename is atomic, but wait out a half-written read anyway
            with contextlib.suppress(json.JSONDecodeError):
                return json.loads(path.read_text())
            time.sleep(0.2)
        raise AssertionError(f"{path} is not valid JSON after saving")


@pytest.fixture
def walk(browser, lab):
    walks: list[Walk] = []

    def start(notebook: str, tag: str) -> Walk:
        w = Walk(browser, lab, notebook, tag)
        walks.append(w)
        return w

    yield start
    for w in walks:
        w.close()


def _chapter_names() -> list[str]:
    return sorted(p.name for p in CHAPTERS.glob("[0-9][0-9]_*.ipynb") if p.name != START)


def _check_links(w: Walk) -> None:
    paths = w.links()
    missing = [c for c in _chapter_names() if not any(p.endswith(c) for p in paths)]
    assert not missing, f"{w.notebook} does not link {missing}; it links {paths}"


def _explorer_redraws(w: Walk) -> None:
    slider = w.panel.locator(".widget-slider, .jupyter-widgets.widget-hslider").filter(
        has_text="mask_patch"
    ).first
    explorer = slider.locator("xpath=ancestor::div[contains(@class,'jp-OutputArea')][1]")
    figure = explorer.locator("img").first
    with w.step("explorer_before"):
        slider.scroll_into_view_if_needed()
        figure.wait_for()
        before = figure.get_attribute("src")
    with w.step("explorer_after"):
        slider.locator(".noUi-handle, .ui-slider-handle, [role='slider']").first.click()
        for _ in range(5):
            w.page.keyboard.press("ArrowRight")
        w.page.wait_for_function(
            "([el, old]) => { const img = el.querySelector('img'); return img && img.src !== old; }",
            arg=[explorer.element_handle(), before],
        )


def _solution(worked: Path, grade_id: str) -> str:
    """The worked edition's source of a solution cell, its markers' lines dropped."""
    nb = json.loads(worked.read_text())
    cell = next(c for c in nb["cells"]
                if c["metadata"].get("nbgrader", {}).get("grade_id") == grade_id)
    lines = "".join(cell["source"]).split("\n")
    return "\n".join(line for line in lines if "### BEGIN SOLUTION" not in line
                     and "### END SOLUTION" not in line)


def test_student_path_from_the_start_page_to_a_passing_check(walk, lab):
    w = walk(f"{STUDENT}/{START}", "student")
    with w.step("open_start_page"):
        w.open()
    with w.step("start_page_links_every_chapter"):
        _check_links(w)
    with w.step("follow_link_to_chapter_03"):
        w.follow(f"{STUDENT}/{MASKING}")

    student = json.loads((lab["root"] / STUDENT / MASKING).read_text())
    stubs = [i for i, c in enumerate(student["cells"]) if STUB in "".join(c["source"])]
    assert stubs, f"the student edition of {MASKING} has no stub cell"
    with w.step("run_all_reaches_the_end"):
        w.run_all()
        errors = w.visible_errors()
        assert not errors, f"a cell shows an error: {errors[0][:2000]}"
    with w.step("unwritten_pieces_say_not_implemented_yet"):
        reported = [t for t in w.outputs() if "not implemented yet" in t]
        assert len(reported) >= len(stubs), (
            f"{len(stubs)} stub cells but {len(reported)} checks say 'not implemented yet': "
            f"{reported}"
        )

    first = stubs[0]
    grade_id = student["cells"][first]["metadata"]["nbgrader"]["grade_id"]
    with w.step("type_a_solution_into_the_first_stub"):
        editor = w.cell(first).locator(".cm-content")
        editor.scroll_into_view_if_needed()
        editor.click()
        w.page.keyboard.press("Control+a")
        # pasted as a person would paste it: no auto-indent or bracket closing on the way in
        w.page.keyboard.insert_text(_solution(CHAPTERS / MASKING, grade_id))
        assert STUB not in editor.text_content()
    with w.step("rerun_the_cell_and_its_check"):
        w.run_cell(first)
        w.run_cell(first + 1)
        check = w.cell(first + 1).locator(".jp-OutputArea").text_content()
        assert "✓" in check and "not implemented" not in check, f"the check printed: {check}"
    _explorer_redraws(w)


def test_worked_start_page_links_every_chapter(walk):
    w = walk(f"{WORKED}/{START}", "worked_start")
    with w.step("open"):
        w.open()
    with w.step("links"):
        _check_links(w)


def test_worked_masking_chapter_runs_and_explorer_redraws(walk):
    w = walk(f"{WORKED}/{MASKING}", "worked_03")
    with w.step("open"):
        w.open()
    with w.step("run_all"):
        w.run_all()
        errors = w.visible_errors()
        assert not errors, f"a cell shows an error: {errors[0][:2000]}"
    _explorer_redraws(w)
    with w.step("saved"):
        saved = w.save_and_read()
        error_outputs = [
            o for c in saved["cells"] if c["cell_type"] == "code"
            for o in c.get("outputs", []) if o.get("output_type") == "error"
        ]
        assert not error_outputs, f"saved notebook has error outputs: {error_outputs[:1]}"
