"""Bounded load on loopback: many concurrent streaming clients share the batch, every answer
completes and equals the offline engine's greedy answer, and every KV block is free after."""
from __future__ import annotations

import asyncio
import threading
import time

import httpx

from labkit.models.sampling import SamplingParams
from labkit.serve.client import QUESTIONS, chat_bodies, run_load

CLIENTS = 12
MAX_TOKENS = 8


def test_concurrent_streams(server, llm, wait_idle):
    reqs = chat_bodies("embedded", CLIENTS, MAX_TOKENS)
    peak = {"running": 0}
    done = threading.Event()

    def watch() -> None:   # how many sequences the engine ran at once, seen from /stats
        with httpx.Client(base_url=server.url, timeout=10) as c:
            while not done.is_set():
                peak["running"] = max(peak["running"], c.get("/stats").json()["running"])
                time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        report, results = asyncio.run(run_load(server.url, reqs, concurrency=CLIENTS, deadline_s=150))
    finally:
        done.set()
        watcher.join()
    assert report.completed == CLIENTS and report.failed == 0, report.errors
    assert peak["running"] > 1, "concurrent requests did not share the batch"

    prompts = [llm.tokenizer.encode_chat(b["messages"]) for b in reqs]
    offline = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=MAX_TOKENS))
    for r, want, q in zip(results, offline, QUESTIONS):
        assert r.text == want.text, q
        assert r.finish_reason == want.finish_reason
        assert r.completion_tokens == len(want.token_ids) and r.prompt_tokens == len(want.prompt_token_ids)
        assert r.ttft_s is not None and r.ttft_s <= r.latency_s
    s = wait_idle()
    assert s["blocks_used"] == 0 and s["blocks_free"] == s["blocks_total"]
