"""Shared fixtures. Tests run offline, on CPU; Numba kernels run in the CUDA simulator."""
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
# Under `pytest -n N` each worker gets its share of the cores: torch with more threads than
# cores slows down many times over. Subprocesses (CLI, server) inherit the setting.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _workers)))
try:
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    if not torch.cuda.is_available():
        os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
except ImportError:
    pass
# The simulator runs a block's threads as Python threads; frequent switches make syncthreads cheap.
sys.setswitchinterval(1e-4)
# `python -m pytest` in the checkout puts its root on sys.path, where kernels/ stands in for
# Hugging Face's `kernels` package that transformers probes for: drop it, as `python -m labkit` does.
from labkit.__main__ import drop_checkout_root  # noqa: E402

sys.path[:] = drop_checkout_root(sys.path)


@pytest.fixture(scope="session")
def embedded():
    """(model, tokenizer) of the embedded SmolLM2-135M in float32."""
    from labkit.loading import load_model

    return load_model("embedded")


CHROMIUM = "/usr/bin/chromium"      # Debian's; `.ci/run` installs it
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def open_page():
    """`open_page(url, height)`: a 1280-px-wide page of headless chromium (driven by Playwright) at
    `url`, 60 s per action; one browser per test module. Skips when chromium or Playwright is
    missing: ask for it before a costly fixture (a server, a model) so a skip costs nothing."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install -y chromium; .ci/run does it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)

        def open_page(url: str, height: int):
            page = browser.new_page(viewport={"width": 1280, "height": height})
            page.set_default_timeout(60_000)
            page.goto(url)
            return page

        yield open_page
        browser.close()
