"""A client that goes away frees its sequence at once, and disturbs nobody else."""
from __future__ import annotations

import json
import threading

import httpx
import pytest

from labkit.models.sampling import SamplingParams

LONG_ANSWER = 320   # far more decode steps than the test lets happen before it hangs up


def steps(llm) -> int:
    return llm.stats()["steps"]


def test_stream_disconnect_aborts(server, llm, chat, wait_idle):
    messages = [{"role": "user", "content": "List some colors."}]
    other: dict = {}

    def bystander() -> None:   # a well-behaved stream running alongside
        with httpx.Client(base_url=server.url, timeout=120) as c, c.stream(
                "POST", "/v1/chat/completions", json={**chat("List some colors.", 12), "stream": True}) as r:
            other["lines"] = [x for x in r.iter_lines() if x.startswith("data: ")]

    start = steps(llm)
    t = threading.Thread(target=bystander)
    t.start()
    with httpx.Client(base_url=server.url, timeout=120) as c:
        with c.stream("POST", "/v1/chat/completions",
                      json={**chat("Write a very long story about a dragon.", LONG_ANSWER), "stream": True}) as r:
            seen = 0
            for line in r.iter_lines():
                seen += line.startswith("data: ")
                if seen >= 4:
                    break   # leaving the block closes the connection mid-stream
    t.join(120)
    s = wait_idle(timeout=20)
    assert s["running"] == 0 and s["waiting"] == 0 and s["blocks_used"] == 0
    assert steps(llm) - start < LONG_ANSWER // 2, "the abandoned sequence kept decoding"
    assert other["lines"][-1] == "data: [DONE]"
    text = "".join(json.loads(x[6:])["choices"][0]["delta"].get("content") or "" for x in other["lines"][:-1])
    want = llm.generate([llm.tokenizer.encode_chat(messages)], SamplingParams(temperature=0, max_tokens=12))[0]
    assert text == want.text


def test_non_streaming_disconnect_aborts(server, llm, chat, wait_idle):
    start = steps(llm)
    with httpx.Client(base_url=server.url, timeout=httpx.Timeout(120, read=1.0)) as c:
        with pytest.raises(httpx.ReadTimeout):   # the client gives up and closes the connection
            c.post("/v1/chat/completions", json=chat("Write a very long story about a knight.", LONG_ANSWER))
    s = wait_idle(timeout=20)
    assert s["running"] == 0 and s["blocks_used"] == 0
    assert steps(llm) - start < LONG_ANSWER // 2, "the abandoned request kept decoding"
