"""The course in JupyterLab, in a real browser (Debian's chromium driven by Playwright): notebook
00 runs top to bottom, and moving the memory planner's batch slider changes its summary. This
is the widgets' whole path: kernel -> comm messages -> the ipywidgets front end -> a key press
on the slider -> back to the kernel, which recomputes and redraws.

JupyterLab runs on 127.0.0.1 at a free port with a fresh token, from a temporary folder
holding a copy of the notebook (autosave never touches notebooks/), with its own settings
(the notebook's kernel starts without asking, no news pop-up). Skipped when /usr/bin/chromium
(`.ci/run` installs it), JupyterLab or Playwright is missing (the browser is conftest's `open_page`). The screenshot of the planner is
written where the test prints (LABKIT_LAB_SCREENSHOT chooses the path).
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

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "00_why_deployment_is_hard.ipynb"
RUN_TIMEOUT = 300      # seconds for Run All (about 12 s on an idle 2-core CPU)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(RUN_TIMEOUT + 180)]

# Every code cell's execution count and the kernel's state, read from JupyterLab's own model
# (the notebook renders lazily: cells below the screen may have no prompt in the page yet).
PROGRESS_JS = """() => {
  const panel = window.jupyterapp.shell.currentWidget, cells = panel.content.model.cells, out = [];
  for (let i = 0; i < cells.length; i++) {
    const c = cells.get(i);
    if (c.type === 'code') out.push({count: c.executionCount, errors: c.outputs.toJSON()
      .filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue)});
  }
  return {cells: out, kernel: panel.sessionContext.session?.kernel?.status ?? 'none'};
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settings(folder: Path) -> None:
    """User settings: start the notebook's kernel without a dialog; no news notification."""
    for plugin, values in {"notebook-extension/tracker": {"autoStartDefaultKernel": True},
                           "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False}}.items():
        path = folder / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """(url of notebook 00, the server's log) for a JupyterLab on 127.0.0.1."""
    pytest.importorskip("jupyterlab")
    pytest.importorskip("ipywidgets")
    home, root = tmp_path_factory.mktemp("jupyter"), tmp_path_factory.mktemp("course")
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, root / NOTEBOOK)
    _settings(home / "settings")
    port, token = _free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}      # the kernel's inline plots
    env.update(LABKIT_USE_SOLUTIONS="1", CUDA_VISIBLE_DEVICES="", JUPYTER_CONFIG_DIR=str(home / "config"),
               JUPYTER_RUNTIME_DIR=str(home / "runtime"), JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"))
    log = home / "server.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True"],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"JupyterLab did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.3)
    yield f"{base}/lab/tree/{NOTEBOOK}?token={token}", log
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()


@pytest.fixture(scope="module")
def page(open_page, lab):
    page = open_page(lab[0], height=900)
    page.wait_for_function("() => window.jupyterapp?.shell.currentWidget?.sessionContext?.session?.kernel")
    return page


def run_all(page, log: Path) -> dict:
    """Run All Cells (as the Run menu does) and wait until every code cell has run and the kernel is idle."""
    page.wait_for_function(f"() => ({PROGRESS_JS})().kernel === 'idle'")
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")  # resolves at the end
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        state = page.evaluate(PROGRESS_JS)
        if all(c["count"] is not None for c in state["cells"]) and state["kernel"] == "idle":
            return state
        time.sleep(0.5)
    pytest.fail(f"Run All did not finish in {RUN_TIMEOUT} s: {state}\n{log.read_text()[-2000:]}")


def test_notebook_00_runs_and_the_memory_planner_answers_a_slider(page, lab):
    state = run_all(page, lab[1])
    errors = [e for c in state["cells"] for e in c["errors"]]
    assert not errors, errors

    planner = page.locator(".widget-vbox", has=page.locator(".widget-html", has_text="largest batch at context")).first
    summary = planner.locator(".widget-html").filter(has_text="largest batch at context")
    summary.scroll_into_view_if_needed()
    before = summary.text_content()
    assert "KV cache: 68.72 GB" in before and "does not fit" in before     # batch 32, context 4096, H100
    chart = planner.locator(".widget-image")
    box = chart.bounding_box()
    assert box["width"] <= 640 and box["height"] <= 400, box       # shown at its size, not stretched

    handle = planner.locator(".widget-hslider .noUi-handle").first   # batch (the first slider): 32 -> 64
    handle.scroll_into_view_if_needed()
    handle.click()
    handle.press("ArrowRight")          # what a mouse drag ends with too: the slider's change event
    page.wait_for_function("([el, old]) => el.textContent !== old", arg=[summary.element_handle(), before])
    after = summary.text_content()
    assert after != before
    assert after.split("KV cache:")[1].split("GB")[0] != before.split("KV cache:")[1].split("GB")[0], after

    planner.evaluate("el => el.scrollIntoView({block: 'center'})")
    time.sleep(0.5)                     # the new chart's image
    path = Path(os.environ.get("LABKIT_LAB_SCREENSHOT") or lab[1].parent / "labkit_lab_planner.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    print(f"\nscreenshot: {path}")
    assert path.stat().st_size > 10_000
