"""Exercise 09 (chapter 09): a streaming client for an OpenAI-compatible server (solution)."""
from __future__ import annotations

import json
from typing import Iterable, Iterator

import httpx


def iter_events(lines: Iterable[str]) -> Iterator[dict]:
    """Yield the JSON object of every `data:` line, in order, until `data: [DONE]`."""
    for line in lines:
        if not line.startswith("data:"):
            continue                      # blank separators, ": keep-alive" comments, event:/id: fields
        data = line[len("data:"):].strip()
        if data == "[DONE]":
            return
        yield json.loads(data)


def accumulate(events: Iterable[dict]) -> dict:
    """Fold chat-completion chunks into one answer: text, finish reason and token counts."""
    pieces: list[str] = []
    finish_reason, usage = None, None
    for event in events:
        if "error" in event:
            raise RuntimeError(event["error"].get("message", "the server failed"))
        for choice in event.get("choices") or []:
            content = (choice.get("delta") or {}).get("content")
            if content:
                pieces.append(content)
            if choice.get("finish_reason") is not None:
                finish_reason = choice["finish_reason"]
        if event.get("usage"):
            usage = event["usage"]
    return {
        "text": "".join(pieces),
        "finish_reason": finish_reason,
        "content_chunks": len(pieces),
        "completion_tokens": usage["completion_tokens"] if usage else len(pieces),
        "prompt_tokens": usage["prompt_tokens"] if usage else None,
    }


def stream_chat(base_url: str, messages: list[dict], model: str = "embedded", max_tokens: int = 64,
                temperature: float = 0.0, client: httpx.Client | None = None) -> dict:
    """Stream one chat completion and return what `accumulate` makes of it."""
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature,
            "stream": True, "stream_options": {"include_usage": True}}
    own = client is None
    client = client or httpx.Client(timeout=120)
    try:
        with client.stream("POST", f"{base_url}/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                response.read()
                raise RuntimeError(response.json()["error"]["message"])
            return accumulate(iter_events(response.iter_lines()))
    finally:
        if own:
            client.close()
