"""The chat page in a real browser (Debian's chromium driven by Playwright): a message goes
in, the answer streams out of the engine, the live panel fills in, Stop aborts, Clear clears.

Skipped only when /usr/bin/chromium is missing (`.ci/run` installs it; the browser is
conftest's `open_page`). The screenshot of
the answered page is written where the test prints (LABKIT_SCREENSHOT chooses the path).
"""
from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

import pytest

@pytest.fixture(scope="module")
def page_url(llm):
    from labkit.serve.gradio_app import build_demo, launch

    demo = build_demo("embedded", llm=llm, engine_kwargs={"max_batch_size": 16})
    url = launch(demo, server_port=None, block=False, quiet=True)
    assert url.startswith("http://127.0.0.1:")
    yield url
    demo.close()


@pytest.fixture(scope="module")
def page(open_page, page_url):
    page = open_page(page_url, height=820)
    page.wait_for_selector("#message textarea")
    return page


def set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def send(page, text: str, timeout: float = 30) -> None:
    """Type `text` and press Enter until the page takes it (the box clears as the reply starts).

    Gradio drops a submit that arrives while the previous reply's event is still closing
    (trigger_mode "once", right for a chat box); pressing again is what a user would do.
    """
    box = page.locator("#message textarea")
    box.fill(text)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        box.press("Enter")
        for _ in range(20):
            if box.input_value() == "":
                return
            time.sleep(0.05)
    raise AssertionError(f"the page did not take the message {text!r} within {timeout} s")


def bot_texts(page) -> list[str]:
    return page.locator('#chatbot [data-testid="bot"]').all_inner_texts()


def wait_answer(page, llm, turn: int, timeout: float = 90) -> list[int]:
    """Wait for answer number `turn` to finish; returns the lengths seen while it grew."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        texts = bot_texts(page)
        n = len(texts[turn]) if len(texts) > turn else 0
        if not seen or seen[-1] != n:
            seen.append(n)
        stats = page.locator("#stats").inner_text()
        if n and llm.stats()["running"] == 0 and "…" not in stats and "tokens generated" in stats:
            return seen
        time.sleep(0.03)
    raise AssertionError(f"no complete answer within {timeout} s; lengths seen {seen}")


def test_chat_streams_and_screenshot(page, llm, wait_idle):
    set_number(page, "max_tokens", 32)
    set_number(page, "temperature", 0)
    send(page, "What is the capital of France? Answer in one sentence.")
    lengths = wait_answer(page, llm, 0)
    assert len([n for n in lengths if n > 0]) >= 2, f"the answer did not stream in: {lengths}"
    answer = bot_texts(page)[0]
    assert "Paris" in answer
    stats = page.locator("#stats").inner_text()
    assert re.search(r"time to first token\s+\d+\.\d+ s", stats), stats
    assert re.search(r"tokens/s\s+\d", stats), stats
    assert "KV blocks used" in page.locator("#engine").inner_text()

    send(page, "And of Germany?")        # the second turn re-sends the first: the prefix cache has it
    wait_answer(page, llm, 1)
    hit = re.search(r"prefix-cache hit\s+(\d+) of (\d+)", page.locator("#stats").inner_text())
    assert hit and int(hit.group(1)) >= 16, page.locator("#stats").inner_text()

    path = Path(os.environ.get("LABKIT_SCREENSHOT") or Path(tempfile.gettempdir()) / "labkit_chat_demo.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    print(f"\nscreenshot: {path}")
    assert path.stat().st_size > 10_000
    assert wait_idle()["blocks_used"] == 0


def test_stop_and_clear(page, llm, wait_idle):
    set_number(page, "max_tokens", 320)
    set_number(page, "temperature", 0.7)
    start, answers = llm.stats()["steps"], len(bot_texts(page))
    send(page, "Write a long story about a lighthouse keeper.")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (len(bot_texts(page)) > answers and bot_texts(page)[-1]):
        time.sleep(0.05)
    assert llm.stats()["running"] == 1, "the story was not being written when Stop was pressed"
    page.locator("#stop").click()
    s = wait_idle(timeout=20)
    assert s["running"] == 0 and s["blocks_used"] == 0
    assert llm.stats()["steps"] - start < 160, "Stop did not abort the sequence"
    page.locator("#clear").click()
    page.wait_for_function("() => document.querySelectorAll('#chatbot [data-testid=\"bot\"]').length === 0")
