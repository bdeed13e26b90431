"""Exercise 09 (SSE client): solutions score full marks, stubs zero, typical mistakes lose points."""
import pytest


EXERCISE = "ex09_sse_client"


def test_solution_full_marks(g):
    report = g.solution(EXERCISE)
    assert report.score == report.max > 0, g.failed(report)


def test_stub_scores_zero(g):
    report = g.stub(EXERCISE)
    assert report.score == 0 and all(r.message == "not implemented yet" for r in report.results)


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
])
def test_typical_mistakes_lose_points(tmp_path, old, new, check, hint, g):
    report = g.variant(EXERCISE, tmp_path, old, new)
    failed = g.failed(report)
    assert report.score < report.max
    assert check in failed, f"{check} should fail; failures: {failed}"
    if hint:
        assert hint in failed[check], failed[check]
