"""Every notebook runs top to bottom (solutions in place of the learner's exercises, on a CPU),
and no notebook is committed with outputs.

Each notebook is its own test, so chapters added later are covered without touching this file.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
NOTEBOOK_TIMEOUT = 600   # seconds for a whole notebook (and for any one cell)
STRIP = "jupyter nbconvert --clear-output --inplace"


def _threads_per_worker() -> int:
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, (os.cpu_count() or 1) // workers)


def test_each_chapter_is_numbered_once_and_titled_by_its_number():
    numbers = [p.name[:2] for p in NOTEBOOKS]
    assert numbers[:2] == ["00", "01"] and len(set(numbers)) == len(numbers), numbers
    for path in NOTEBOOKS:
        first = json.loads(path.read_text())["cells"][0]
        title = "".join(first["source"]).splitlines()[0]
        assert first["cell_type"] == "markdown" and title.startswith(f"# {path.name[:2]} · "), \
            f"{path.name}: the first cell should be the title '# {path.name[:2]} · ...', got {title!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path: Path):
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, cell in enumerate(nb.cells)
             if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: code cells {dirty} hold outputs; strip them with `{STRIP} {path.relative_to(ROOT)}`"


@pytest.mark.slow
@pytest.mark.timeout(NOTEBOOK_TIMEOUT + 60)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path: Path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("LABKIT_USE_SOLUTIONS", "1")   # notebooks import solutions/ instead of exercises/
    monkeypatch.setenv("MPLBACKEND", "Agg")           # no display
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")    # the CPU path, even on a GPU machine
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    # One share of the cores per pytest-xdist worker: torch's thread pool collapses when its
    # threads outnumber the cores (a barrier per op waits for a descheduled thread).
    monkeypatch.setenv("OMP_NUM_THREADS", str(_threads_per_worker()))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=NOTEBOOK_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT)}})  # the kernel starts in the repo root
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        message = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # drop the traceback's terminal colours
        pytest.fail(f"{path.name}: a cell failed:\n{message[-3000:]}", pytrace=False)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
