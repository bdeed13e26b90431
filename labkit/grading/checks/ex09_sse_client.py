"""Checks for exercise 09: a streaming (server-sent events) client for the OpenAI API.

The HTTP part runs against `httpx.MockTransport`, a fake server inside the process: no
network, no model, and the check sees exactly what the client sent.
"""
from __future__ import annotations

import json

import httpx

from labkit.grading import check


def _chunk(content=None, role=None, finish=None) -> dict:
    delta = {"role": role} if role else {}
    if content is not None:
        delta["content"] = content
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "embedded",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


USAGE = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "embedded", "choices": [],
         "usage": {"prompt_tokens": 31, "completion_tokens": 4, "total_tokens": 35}}
CHUNKS = [_chunk("", role="assistant"), _chunk("Hel"), _chunk("lo"), _chunk(" there"), _chunk("!"),
          _chunk(None, finish="stop"), USAGE]


def _sse(events: list[dict], sep: str = "data: ") -> list[str]:
    lines = []
    for e in events:
        lines += [sep + json.dumps(e), ""]
    return lines + ["data: [DONE]", ""]


def _events(impl, lines) -> list[dict]:
    out = impl.iter_events(iter(lines))
    assert out is not None, "iter_events should yield the events (it returned None)"
    return list(out)


@check(points=2)
def iter_events_yields_each_data_line(impl):
    got = _events(impl, _sse(CHUNKS))
    assert got == CHUNKS, f"expected the {len(CHUNKS)} JSON objects of the data: lines in order, got {len(got)}"


@check(points=2)
def iter_events_stops_at_done(impl):
    lines = _sse(CHUNKS[:2]) + ["data: " + json.dumps(_chunk("after the end"))]
    try:
        got = _events(impl, lines)
    except json.JSONDecodeError:
        raise AssertionError("'data: [DONE]' is not JSON: stop there instead of decoding it") from None
    assert got == CHUNKS[:2], "nothing after 'data: [DONE]' belongs to the stream"


@check(points=2)
def iter_events_skips_comments_and_other_fields(impl):
    lines = [": keep-alive", "", "event: message", "id: 7", "data:" + json.dumps(CHUNKS[1]), "",
             "retry: 100", "data:   " + json.dumps(CHUNKS[2]), "", "data:[DONE]"]
    try:
        got = _events(impl, lines)
    except (json.JSONDecodeError, ValueError) as e:
        raise AssertionError(f"only data: lines are JSON, and the space after 'data:' is optional ({e})") from None
    assert got == CHUNKS[1:3], ("expected exactly the two data: events (with or without a space after 'data:'), "
                                f"got {len(got)}")


@check(points=2)
def accumulate_joins_the_text(impl):
    out = impl.accumulate(iter(CHUNKS))
    assert isinstance(out, dict), f"accumulate should return a dict, got {type(out).__name__}"
    assert out.get("text") == "Hello there!", f"text: expected 'Hello there!', got {out.get('text')!r}"
    assert out.get("finish_reason") == "stop", f"finish_reason: expected 'stop', got {out.get('finish_reason')!r}"


@check(points=3)
def accumulate_counts_tokens(impl):
    out = impl.accumulate(iter(CHUNKS))
    assert out.get("content_chunks") == 4, (
        f"content_chunks: 4 chunks carry text, got {out.get('content_chunks')} "
        "(the role chunk and the final empty chunk carry none)")
    assert out.get("completion_tokens") == 4 and out.get("prompt_tokens") == 31, (
        "completion_tokens / prompt_tokens come from the usage chunk (the one with no choices)")
    usage = dict(USAGE, usage={"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21})
    out = impl.accumulate(iter(CHUNKS[:-1] + [usage]))
    assert out.get("completion_tokens") == 9, "trust the server's usage count over counting chunks"
    out = impl.accumulate(iter(CHUNKS[:-1]))
    assert out.get("completion_tokens") == 4 and out.get("prompt_tokens") is None, (
        "without a usage chunk, completion_tokens is the number of content chunks and prompt_tokens None")


@check(points=1)
def accumulate_raises_on_error_event(impl):
    try:
        impl.accumulate(iter(CHUNKS[:2] + [{"error": {"message": "engine failed", "type": "server_error"}}]))
    except NotImplementedError:   # a RuntimeError too, but a stub must not pass
        raise
    except RuntimeError as e:
        assert "engine failed" in str(e), "the RuntimeError should carry the server's message"
        return
    raise AssertionError("an event with an 'error' key should raise RuntimeError")


def _client(events: list[dict], seen: list, status: int = 200, error: str = "") -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if status != 200:
            return httpx.Response(status, json={"error": {"message": error, "type": "invalid_request_error",
                                                          "param": None, "code": None}})
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              content="\n".join(_sse(events)).encode())

    return httpx.Client(transport=httpx.MockTransport(handler))


@check(points=3)
def stream_chat_sends_a_streaming_request(impl):
    seen: list = []
    messages = [{"role": "user", "content": "Hi"}]
    out = impl.stream_chat("http://server", messages, model="embedded", max_tokens=5, temperature=0.0,
                           client=_client(CHUNKS, seen))
    assert seen, "stream_chat did not send a request through the given client"
    req = seen[0]
    assert req.method == "POST" and req.url.path == "/v1/chat/completions", \
        f"expected POST /v1/chat/completions, got {req.method} {req.url.path}"
    body = json.loads(req.content)
    assert body.get("stream") is True, "the body needs \"stream\": true"
    assert (body.get("stream_options") or {}).get("include_usage") is True, \
        "ask for the usage chunk: \"stream_options\": {\"include_usage\": true}"
    assert body.get("messages") == messages and body.get("model") == "embedded" and body.get("max_tokens") == 5, \
        "the body should carry model, messages and max_tokens as given"
    assert isinstance(out, dict) and out.get("text") == "Hello there!" and out.get("completion_tokens") == 4, \
        "stream_chat should return accumulate's dict for the streamed answer"


@check(points=2)
def stream_chat_raises_on_http_errors(impl):
    seen: list = []
    client = _client([], seen, status=400, error="temperature must be between 0 and 2, got 9")
    try:
        impl.stream_chat("http://server", [{"role": "user", "content": "Hi"}], temperature=9.0, client=client)
    except NotImplementedError:   # a RuntimeError too, but a stub must not pass
        raise
    except RuntimeError as e:
        assert "temperature must be between 0 and 2" in str(e), "the RuntimeError should carry error.message"
        return
    raise AssertionError("a 400 answer should raise RuntimeError with the server's error message")
