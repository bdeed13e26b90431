"""Exercise 09 (chapter 09): a streaming client for an OpenAI-compatible server.

With `"stream": true` the server answers with server-sent events: lines of text, one event
per `data:` line, events separated by blank lines, and the stream ends with `data: [DONE]`:

    data: {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}], ...}

    data: {"choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": null}], ...}

    data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], ...}

    data: {"choices": [], "usage": {"prompt_tokens": 31, "completion_tokens": 9, "total_tokens": 40}}

    data: [DONE]

Write the three pieces of a client, then check your work in notebook 09, or:

    labkit grade ex09_sse_client --impl exercises/ex09_sse_client.py
"""
from __future__ import annotations

from typing import Iterable, Iterator

import httpx


def iter_events(lines: Iterable[str]) -> Iterator[dict]:
    """Yield the JSON object of every `data:` line, in order, until `data: [DONE]`.

    - `[DONE]` is not JSON: stop there (and ignore anything after it).
    - The space after `data:` is optional (`data:{...}` is the same event).
    - Skip blank lines, comment lines (starting with `:`, used as keep-alives) and other
      fields such as `event:` or `id:`.
    """
    raise NotImplementedError(
        "write iter_events (the JSON of each data: line, until [DONE]) in exercises/ex09_sse_client.py; "
        "notebook 09, section 'Exercise 09 · a streaming client', explains it")


def accumulate(events: Iterable[dict]) -> dict:
    """Fold chat-completion chunks into one answer.

    Returns a dict with:
      text              the concatenated `choices[0].delta.content` pieces (None counts as "")
      finish_reason     the last non-null `finish_reason` (None if the stream had none)
      content_chunks    how many chunks carried non-empty content
      completion_tokens `usage.completion_tokens` from the usage chunk when the server sent
                        one, else `content_chunks` (an estimate: about one token per chunk)
      prompt_tokens     `usage.prompt_tokens`, or None without a usage chunk

    A chunk may have no choices at all (the usage chunk); an event with an "error" key
    means the server failed mid-stream: raise RuntimeError with its message.
    """
    raise NotImplementedError(
        "write accumulate (fold the chunks into one answer) in exercises/ex09_sse_client.py; "
        "notebook 09, section 'Exercise 09 · a streaming client', explains it")


def stream_chat(base_url: str, messages: list[dict], model: str = "embedded", max_tokens: int = 64,
                temperature: float = 0.0, client: httpx.Client | None = None) -> dict:
    """Stream one chat completion from `base_url` (like "http://127.0.0.1:23333").

    POST `{base_url}/v1/chat/completions` with a JSON body holding model, messages,
    max_tokens, temperature, `"stream": true` and `"stream_options": {"include_usage": true}`
    (so the last chunk carries the token counts). Read the response line by line as it
    arrives (`client.stream(...)` and `response.iter_lines()`), feed the lines through
    `iter_events` and `accumulate`, and return accumulate's dict.

    Use `client` when one is given (tests pass one), else a fresh `httpx.Client(timeout=120)`.
    A status other than 200 raises RuntimeError carrying the server's error message
    (the JSON body's `error.message`).
    """
    raise NotImplementedError(
        "write stream_chat (POST a streaming request and read it) in exercises/ex09_sse_client.py; "
        "notebook 09, section 'Exercise 09 · a streaming client', explains it")
