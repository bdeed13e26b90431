"""Checks for exercise 09: a streaming (server-sent events) client for the OpenAI API.

The HTTP part runs against `httpx.MockTransport`, a fake server inside the process: no
network, no model, and the check sees exactly what the client sent.
"""
from __future__ import annotations

import json

import httpx

from labkit.grading import check


def _chunk(content=None, role=None, finish=None, has_content: bool = True) -> dict:
    delta = {"role": role} if role else {}
    if has_content:
        delta["content"] = content
    # with include_usage, OpenAI-style servers send "usage": null on every chunk but the last
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "embedded", "usage": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


USAGE = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "embedded", "choices": [],
         "usage": {"prompt_tokens": 31, "completion_tokens": 4, "total_tokens": 35}}
CHUNKS = [_chunk("", role="assistant"), _chunk("Hel"), _chunk(None), _chunk("lo"), _chunk(" thère 👋"), _chunk("!\n"),
          _chunk(finish="stop", has_content=False), USAGE]
TEXT = "Hello thère 👋!\n"   # the answer ends with a newline: keep it, do not strip


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


@check(points=1)
def iter_events_of_an_empty_or_cut_stream(impl):
    assert _events(impl, ["data: [DONE]", ""]) == [], "a stream with no events before [DONE] yields nothing"
    assert _events(impl, []) == [], "no lines at all: nothing to yield"
    cut = _sse(CHUNKS[:3])[:-2]   # the connection closed before [DONE]
    assert _events(impl, cut) == CHUNKS[:3], "a stream that ends without [DONE] yields every event it carried"


@check(points=2)
def accumulate_joins_the_text(impl):
    try:
        out = impl.accumulate(iter(CHUNKS))
    except TypeError as e:
        raise AssertionError(f"accumulate failed on a chunk whose delta has \"content\": null ({e}): "
                             "count None as \"\"") from None
    assert isinstance(out, dict), f"accumulate should return a dict, got {type(out).__name__}"
    assert out.get("text") == TEXT, f"text: expected {TEXT!r}, got {out.get('text')!r}"
    assert out.get("finish_reason") == "stop", f"finish_reason: expected 'stop', got {out.get('finish_reason')!r}"
    out = impl.accumulate(iter(CHUNKS[:-1] + [_chunk(finish=None, has_content=False), USAGE]))
    assert out.get("finish_reason") == "stop", (
        "a chunk with finish_reason null after the one that said 'stop' must not erase it: keep the last non-null one")
    out = impl.accumulate(iter([]))
    want = {"text": "", "finish_reason": None, "content_chunks": 0, "completion_tokens": 0, "prompt_tokens": None}
    assert {k: out.get(k) for k in want} == want, f"an empty stream should give {want}, got {out}"


@check(points=3)
def accumulate_counts_tokens(impl):
    out = impl.accumulate(iter(CHUNKS))
    assert out.get("content_chunks") == 4, (
        f"content_chunks: 4 chunks carry text, got {out.get('content_chunks')} "
        "(the role chunk, the null-content chunk and the final empty chunk carry none)")
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


def _client(events: list[dict], seen: list, status: int = 200, error: str = "", piece: int = 0,
            newline: str = "\n", drop_after_done: bool = False) -> httpx.Client:
    """A fake server. `piece` > 0 streams the body in pieces of that many bytes, as a socket delivers
    it: pieces split lines, events and multi-byte characters. `drop_after_done`: after [DONE] the
    connection stays open and then breaks, which only a client that reads past [DONE] notices."""
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if status != 200:
            return httpx.Response(status, json={"error": {"message": error, "type": "invalid_request_error",
                                                          "param": None, "code": None}})
        body = newline.join(_sse(events)).encode()
        pieces = [body[i:i + piece] for i in range(0, len(body), piece)] if piece else [body]
        content = _then_drop(pieces, request) if drop_after_done else iter(pieces)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=content)

    return httpx.Client(transport=httpx.MockTransport(handler))


def _then_drop(pieces: list[bytes], request: httpx.Request):
    yield from pieces
    raise httpx.ReadError("the connection broke after [DONE]", request=request)


@check(points=3)
def stream_chat_sends_a_streaming_request(impl):
    seen: list = []
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    out = impl.stream_chat("http://gpu-box:8123", messages, model="other-model", max_tokens=5, temperature=0.7,
                           client=_client(CHUNKS, seen))
    assert seen, "stream_chat did not send a request through the given client"
    req = seen[0]
    assert req.method == "POST" and str(req.url) == "http://gpu-box:8123/v1/chat/completions", (
        f"expected POST http://gpu-box:8123/v1/chat/completions (base_url + /v1/chat/completions), "
        f"got {req.method} {req.url}")
    assert req.headers.get("content-type", "").startswith("application/json"), \
        "send the body as JSON (json=body sets the Content-Type: application/json header)"
    body = json.loads(req.content)
    assert body.get("stream") is True, "the body needs \"stream\": true"
    assert (body.get("stream_options") or {}).get("include_usage") is True, \
        "ask for the usage chunk: \"stream_options\": {\"include_usage\": true}"
    sent = {k: body.get(k) for k in ("model", "messages", "max_tokens", "temperature")}
    want = {"model": "other-model", "messages": messages, "max_tokens": 5, "temperature": 0.7}
    assert sent == want, f"the body should carry model, messages, max_tokens and temperature as given: sent {sent}"
    assert isinstance(out, dict) and out.get("text") == TEXT and out.get("completion_tokens") == 4, \
        "stream_chat should return accumulate's dict for the streamed answer"
    impl.stream_chat("http://server", messages[1:], client=_client(CHUNKS, seen))
    sent = {k: json.loads(seen[-1].content).get(k) for k in ("model", "max_tokens", "temperature")}
    assert sent == {"model": "embedded", "max_tokens": 64, "temperature": 0.0}, (
        f"with the default arguments the body should say model 'embedded', max_tokens 64, temperature 0.0: sent {sent}")


@check(points=2)
def stream_chat_reads_the_stream_as_it_arrives(impl):
    """A socket delivers bytes in pieces of any size: a piece may end inside a line, an event or a
    multi-byte character (the 'è' and the emoji here), and servers may end lines with CRLF."""
    for piece, newline, drop in ((7, "\n", False), (1, "\n", False), (5, "\r\n", False), (7, "\n", True)):
        seen: list = []
        try:
            out = impl.stream_chat("http://server", [{"role": "user", "content": "Hi"}],
                                   client=_client(CHUNKS, seen, piece=piece, newline=newline, drop_after_done=drop))
        except httpx.ReadError:
            raise AssertionError("stream_chat kept reading after 'data: [DONE]' and met the connection breaking: "
                                 "stop at [DONE] (a server may keep the connection open after it), and feed the "
                                 "lines to iter_events as they arrive instead of reading the whole body first") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise AssertionError(f"with the body arriving {piece} byte(s) at a time ({newline!r} line ends) reading "
                                 f"failed: {type(e).__name__}: {e}. Let httpx split the lines: response.iter_lines() "
                                 "joins pieces and decodes characters that straddle them") from None
        assert isinstance(out, dict) and out.get("text") == TEXT, (
            f"with the body arriving {piece} byte(s) at a time ({newline!r} line ends) the text came out as "
            f"{out.get('text') if isinstance(out, dict) else out!r}, expected {TEXT!r}: read lines with "
            "response.iter_lines(), not raw pieces")


@check(points=2)
def stream_chat_raises_on_http_errors(impl):
    seen: list = []
    client = _client([], seen, status=400, error="temperature must be between 0 and 2, got 9")
    try:
        impl.stream_chat("http://server", [{"role": "user", "content": "Hi"}], temperature=9.0, client=client)
    except NotImplementedError:   # a RuntimeError too, but a stub must not pass
        raise
    except RuntimeError as e:
        assert "temperature must be between 0 and 2" in str(e) and "invalid_request_error" not in str(e), (
            f"the RuntimeError should carry the message of the JSON body's error.message, not the whole body: got {e}")
        return
    raise AssertionError("a 400 answer should raise RuntimeError with the server's error message")
