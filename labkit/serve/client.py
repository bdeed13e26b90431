"""A small streaming client for the API server, and a bounded load generator on top of it.

`labkit bench serve`, the serving tests and notebook 09 all measure through this module:
one streamed request gives its text, token counts (from the final `usage` chunk), time to
first token and total latency; `run_load` sends many such requests with a fixed number in
flight and a deadline for the whole batch, so a stuck server fails a test instead of hanging it.
"""
from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Iterable, Iterator

import httpx


@dataclass
class StreamResult:
    """One streamed request as the client saw it."""

    text: str = ""
    finish_reason: str | None = None
    chunks: int = 0                  # content-bearing chunks received
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    ttft_s: float | None = None      # request sent -> first content chunk
    latency_s: float | None = None   # request sent -> [DONE]
    status: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None and self.finish_reason is not None


def iter_sse(lines: Iterable[str]) -> Iterator[dict]:
    """The JSON objects of a server-sent-event stream, up to `data: [DONE]`.

    Only `data:` fields matter here; blank lines separate events, and lines starting with
    ':' are comments (keep-alives).
    """
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        yield json.loads(data)


def _absorb(result: StreamResult, obj: dict, started: float) -> None:
    """Fold one chunk (chat or completion) into the result."""
    if "error" in obj:
        result.error = obj["error"].get("message", "error")
        return
    for choice in obj.get("choices", []):
        piece = choice.get("delta", {}).get("content") if "delta" in choice else choice.get("text")
        if piece:
            if result.ttft_s is None:
                result.ttft_s = time.perf_counter() - started
            result.text += piece
            result.chunks += 1
        result.finish_reason = choice.get("finish_reason") or result.finish_reason
    use = obj.get("usage")
    if use:
        result.prompt_tokens = use.get("prompt_tokens")
        result.completion_tokens = use.get("completion_tokens")
        result.cached_tokens = (use.get("prompt_tokens_details") or {}).get("cached_tokens")


async def stream_request(client: httpx.AsyncClient, path: str, body: dict, timeout: float = 120.0) -> StreamResult:
    """POST `body` with streaming on and read the events; never raises for HTTP trouble."""
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    result, started = StreamResult(), time.perf_counter()
    try:
        async with client.stream("POST", path, json=body, timeout=timeout) as response:
            result.status = response.status_code
            if response.status_code != 200:
                result.error = (await response.aread()).decode(errors="replace")
                return result
            async for line in response.aiter_lines():   # fold events in as they arrive (for the TTFT)
                for obj in iter_sse([line]):
                    _absorb(result, obj, started)
    except (httpx.HTTPError, json.JSONDecodeError) as e:
        result.error = f"{type(e).__name__}: {e}"
    result.latency_s = time.perf_counter() - started
    return result


def chat_body(model: str, messages: list[dict], max_tokens: int, temperature: float = 0.0, **extra) -> dict:
    return {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature, **extra}


QUESTIONS = [
    "What is the capital of France?", "Name three primary colors.", "Why is the sky blue?",
    "Give me a synonym for happy.", "What does a CPU do?", "Write a haiku about rain.",
    "How many legs does a spider have?", "What is 12 times 12?", "Explain gravity in one sentence.",
    "Suggest a name for a cat.", "What is the boiling point of water?", "Translate 'thank you' into Spanish.",
    "What is photosynthesis?", "List two programming languages.", "What is the largest ocean?",
    "Who wrote Romeo and Juliet?",
]


def chat_bodies(model: str, n: int, max_tokens: int) -> list[dict]:
    """`n` greedy chat requests cycling through QUESTIONS (they share the template's system
    prompt, so the prefix cache has something to find, as in real chat traffic)."""
    return [chat_body(model, [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}], max_tokens) for i in range(n)]


@dataclass
class LoadReport:
    """What a batch of concurrent requests did."""

    concurrency: int
    requests: int
    completed: int
    failed: int
    wall_s: float
    completion_tokens: int
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    latency_p50_s: float | None
    latency_p95_s: float | None
    errors: list[str] = field(default_factory=list)
    decode_tok_s: float | None = None   # median per request: tokens after the first / time after the first

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.wall_s if self.wall_s else 0.0

    @property
    def requests_per_s(self) -> float:
        return self.completed / self.wall_s if self.wall_s else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "tokens_per_s": round(self.tokens_per_s, 2),
                "requests_per_s": round(self.requests_per_s, 3)}


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def run_load(base_url: str, bodies: list[dict], concurrency: int, path: str = "/v1/chat/completions",
                   deadline_s: float = 300.0, headers: dict | None = None) -> tuple[LoadReport, list[StreamResult]]:
    """Send every body as a streamed request, `concurrency` at a time, all within `deadline_s`.

    Requests still running at the deadline are cancelled (closing their connections, so
    the server aborts them) and count as failed.
    """
    sem = asyncio.Semaphore(concurrency)
    results: list[StreamResult] = [StreamResult() for _ in bodies]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=base_url, limits=limits, headers=headers, timeout=deadline_s) as client:
        async def one(i: int, body: dict) -> None:
            async with sem:
                results[i] = await stream_request(client, path, body, timeout=deadline_s)

        started = time.perf_counter()
        tasks = [asyncio.ensure_future(one(i, b)) for i, b in enumerate(bodies)]
        _, pending = await asyncio.wait(tasks, timeout=deadline_s)
        for t in pending:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        wall = time.perf_counter() - started
    for i, t in enumerate(tasks):
        if t in pending:
            results[i].error = f"not finished within {deadline_s:g} s"
    done = [r for r in results if r.ok]
    ttft = [r.ttft_s for r in done if r.ttft_s is not None]
    lat = [r.latency_s for r in done if r.latency_s is not None]
    report = LoadReport(concurrency, len(bodies), len(done), len(bodies) - len(done), wall,
                        sum(r.completion_tokens or 0 for r in done),
                        _pct(ttft, 50), _pct(ttft, 95), _pct(lat, 50), _pct(lat, 95),
                        sorted({(r.error or f"status {r.status}")[:200] for r in results if not r.ok}))
    return report, results
