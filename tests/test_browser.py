"""The JupyterLab walkthrough, seen by a browser (issue: chapters must work where students use them).

nbval proves the kernel side of every chapter; this test proves what a student sees: JupyterLab
serves the course, the start page links every chapter, the masking chapter runs top to bottom
without an error, and moving a slider of its mask explorer redraws the figure.

It starts ``jupyter lab`` on 127.0.0.1 with a token (over a copy of ``chapters/`` so the
committed notebooks are never re-saved) and drives Debian's Chromium through Playwright.
Screenshots land in ``test-artifacts/browser/``. Select it alone with ``pytest -m browser``.
"""

from __future__ import annotations

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


def _chromium() -> str | None:
    for candidate in (os.environ.get("SSAST_TEACH_CHROMIUM"), "/usr/bin/chromium"):
        if candidate and Path(candidate).exists():
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    shutil.copytree(CHAPTERS, root / "chapters")
    # JupyterLab 4 renders only the cells in view by default; render them all so the test sees
    # every prompt and output, as a student scrolling through would.
    settings = root / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    news = root / "settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, COURSE_SCALE="ci", MPLBACKEND="module://matplotlib_inline.backend_inline")
    log = open(root / "jupyter.log", "w")  # noqa: SIM115 - closed in the finaliser below
    server = subprocess.Popen(
        [
            sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
            f"--port={port}", f"--IdentityProvider.token={token}", "--allow-root",
            f"--ServerApp.root_dir={root / 'chapters'}", "--ServerApp.open_browser=False",
            f"--LabApp.user_settings_dir={root / 'settings'}",
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
                    pytest.fail(f"jupyter lab did not start: {(root / 'jupyter.log').read_text()}")
                time.sleep(0.5)
        yield {"base": base, "token": token, "root": root / "chapters", "chromium": chromium}
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


@pytest.fixture(scope="module")
def page(lab):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=lab["chromium"],
            headless=True,
            args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def _open(page, lab, notebook: str) -> None:
    page.goto(f"{lab['base']}/lab/tree/{notebook}?token={lab['token']}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", state="attached", timeout=90_000)
    page.wait_for_selector("#jp-main-statusbar >> text=Idle", timeout=90_000)


def test_start_page_links_every_chapter(page, lab):
    _open(page, lab, START)
    chapters = sorted(p.name for p in CHAPTERS.glob("[0-9][0-9]_*.ipynb") if p.name != START)
    hrefs = page.eval_on_selector_all(
        ".jp-RenderedMarkdown a[href]", "links => links.map(a => a.getAttribute('href'))"
    )
    # JupyterLab rewrites relative links to /files/<name>?_xsrf=...: compare the path part.
    paths = [h.split("#")[0].split("?")[0] for h in hrefs]
    missing = [c for c in chapters if not any(p.endswith(c) for p in paths)]
    assert not missing, f"00_start_here does not link {missing}; it links {hrefs}"
    page.screenshot(path=str(ARTIFACTS / "00_start_here.png"))
    page.click(f".jp-RenderedMarkdown a[href*='{MASKING}']")
    page.wait_for_selector(f".lm-TabBar-tab.jp-mod-current >> text={MASKING}", timeout=60_000)


def test_masking_chapter_runs_and_explorer_redraws(page, lab):
    _open(page, lab, MASKING)
    # The start page's link may have opened the chapter already: JupyterLab then restores both
    # notebooks, one behind the other; only the one in view takes the click.
    page.click(".jp-Notebook:visible")
    page.keyboard.press("Escape")
    page.click("div.lm-MenuBar-itemLabel:text-is('Run')")
    page.click("li.lm-Menu-item[data-command='runmenu:run-all']")
    # Each running cell shows [*]; the chapter is done when none does and the kernel is idle.
    page.wait_for_function(
        """() => {
            const prompts = [...document.querySelectorAll('.jp-InputPrompt')];
            return prompts.length > 0 && prompts.every(p => !p.textContent.includes('*'))
                && prompts.some(p => /\\[\\d+\\]/.test(p.textContent));
        }""",
        timeout=300_000,
    )
    page.wait_for_selector("#jp-main-statusbar >> text=Idle", timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "03_masking_run_all.png"), full_page=True)

    errors = page.eval_on_selector_all(
        ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
        "nodes => nodes.map(n => n.textContent).filter(t => t.includes('Traceback'))",
    )
    assert not errors, f"a cell of {MASKING} shows an error in the browser: {errors[0][:2000]}"

    slider = page.locator(".widget-slider, .jupyter-widgets.widget-hslider").filter(
        has_text="mask_patch"
    ).first
    slider.scroll_into_view_if_needed()
    explorer = slider.locator("xpath=ancestor::div[contains(@class,'jp-OutputArea')][1]")
    figure = explorer.locator("img").first
    figure.wait_for(timeout=60_000)
    before = figure.get_attribute("src")
    explorer.screenshot(path=str(ARTIFACTS / "03_masking_explorer_before.png"))

    handle = slider.locator(".noUi-handle, .ui-slider-handle, [role='slider']").first
    handle.click()
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    page.wait_for_function(
        "([el, old]) => { const img = el.querySelector('img'); return img && img.src !== old; }",
        arg=[explorer.element_handle(), before],
        timeout=60_000,
    )
    explorer.screenshot(path=str(ARTIFACTS / "03_masking_explorer_after.png"))
    assert figure.get_attribute("src") != before

    # What the browser ran is saved back to the copy; the saved notebook has no error output.
    page.keyboard.press("Control+s")
    time.sleep(2)
    saved = json.loads((lab["root"] / MASKING).read_text())
    error_outputs = [
        o for c in saved["cells"] if c["cell_type"] == "code"
        for o in c.get("outputs", []) if o.get("output_type") == "error"
    ]
    assert not error_outputs, f"saved notebook has error outputs: {error_outputs[:1]}"
