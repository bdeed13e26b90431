"""Exercise 09 (SSE client): solutions score full marks, stubs zero, typical mistakes lose points.

Kinds of mistake covered: streams and protocols (the body arriving 1, 5 or 7 bytes at a
time, splitting lines, events and multi-byte characters; CRLF line ends; a connection that
breaks after [DONE], which only a client reading past it notices; comments and other
fields; [DONE]; every field of the request, including the defaults and the JSON content
type), contracts (RuntimeError for HTTP errors and error events; null content), boundaries
(an empty stream, a stream cut before [DONE])."""
import pytest


EXERCISE = "ex09_sse_client"


def test_solution_full_marks_and_stub_zero(g):
    g.assert_full_and_zero(EXERCISE)


@pytest.mark.parametrize("old, new, check, hint", [
    # decodes [DONE] as JSON instead of stopping
    ('        if data == "[DONE]":\n            return\n', "", "iter_events_stops_at_done", "not JSON"),
    # reads past [DONE]
    ('        if data == "[DONE]":\n            return\n', '        if data == "[DONE]":\n            continue\n',
     "iter_events_stops_at_done", "after"),
    # assumes exactly "data: " (with the space)
    ('data = line[len("data:"):].strip()', 'data = line[len("data: "):]',
     "iter_events_skips_comments_and_other_fields", "optional"),
    # decodes every non-blank line
    ('        if not line.startswith("data:"):\n            continue',
     '        if not line.strip():\n            continue', "iter_events_skips_comments_and_other_fields", None),
    # counts the role chunk and the empty final chunk as tokens
    ("            if content:\n                pieces.append(content)",
     "            pieces.append(content or '')", "accumulate_counts_tokens", "carry none"),
    # ignores the usage chunk
    ('"completion_tokens": usage["completion_tokens"] if usage else len(pieces)',
     '"completion_tokens": len(pieces)', "accumulate_counts_tokens", "usage"),
    # forgets to ask for the usage chunk
    (', "stream_options": {"include_usage": True}', "", "stream_chat_sends_a_streaming_request", "include_usage"),
    # forgets stream: true
    ('"stream": True, ', "", "stream_chat_sends_a_streaming_request", "stream"),
    # ignores the HTTP status
    ("            if response.status_code != 200:", "            if False:", "stream_chat_raises_on_http_errors", None),
    # error events silently skipped
    ('        if "error" in event:\n            raise RuntimeError(event["error"].get("message", "the server failed"))\n',
     "", "accumulate_raises_on_error_event", None),
    # raw pieces of bytes taken for lines: a piece ends anywhere, even inside a character
    ("iter_events(response.iter_lines())",
     'iter_events(line for piece in response.iter_bytes() for line in piece.decode().split("\\n"))',
     "stream_chat_reads_the_stream_as_it_arrives", "iter_lines"),
    ("iter_events(response.iter_lines())",
     'iter_events(line for text in response.iter_text() for line in text.split("\\n"))',
     "stream_chat_reads_the_stream_as_it_arrives", "iter_lines"),
    # the server's address hard-coded instead of base_url
    ('f"{base_url}/v1/chat/completions"', '"http://127.0.0.1:23333/v1/chat/completions"',
     "stream_chat_sends_a_streaming_request", "base_url"),
    # the whole body read before any line is looked at: reads past [DONE]
    ("            return accumulate(iter_events(response.iter_lines()))",
     "            response.read()\n            return accumulate(iter_events(response.iter_lines()))",
     "stream_chat_reads_the_stream_as_it_arrives", "stop at [DONE]"),
    ("            return accumulate(iter_events(response.iter_lines()))",
     "            lines = list(response.iter_lines())\n            return accumulate(iter_events(lines))",
     "stream_chat_reads_the_stream_as_it_arrives", "as they arrive"),
    # the answer stripped: its final newline (or leading space) is part of it
    ('"text": "".join(pieces)', '"text": "".join(pieces).strip()', "accumulate_joins_the_text", None),
    # the temperature not sent (the server then uses its own default)
    ('"max_tokens": max_tokens, "temperature": temperature,', '"max_tokens": max_tokens,',
     "stream_chat_sends_a_streaming_request", "temperature"),
    # the body sent as text without the JSON content type
    ('json=body) as response', 'content=json.dumps(body)) as response', "stream_chat_sends_a_streaming_request",
     "Content-Type"),
    # "content": null taken as text
    ("            if content:\n                pieces.append(content)",
     '            if content != "":\n                pieces.append(content)', "accumulate_joins_the_text", "None"),
    # the last finish_reason, null or not
    ('            if choice.get("finish_reason") is not None:\n                finish_reason = choice["finish_reason"]',
     '            finish_reason = choice.get("finish_reason")', "accumulate_joins_the_text", "last non-null"),
    # the whole error body as the message
    ('raise RuntimeError(response.json()["error"]["message"])', "raise RuntimeError(response.text)",
     "stream_chat_raises_on_http_errors", "not the whole body"),
    # finish_reason starts as "" instead of None
    ("finish_reason, usage = None, None", 'finish_reason, usage = "", None', "accumulate_joins_the_text",
     "empty stream"),
])
def test_typical_mistakes_lose_points(tmp_path, old, new, check, hint, g):
    g.assert_loses(g.variant(EXERCISE, tmp_path, old, new), check, hint)
