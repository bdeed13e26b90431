"""Bad input gets an OpenAI-style JSON error with the right 4xx, never a traceback, and
leaves the server (and the requests in flight) undisturbed."""
from __future__ import annotations

import json
import threading

import httpx
import pytest

from labkit.models.sampling import SamplingParams

LONG = "word " * 1000   # far more tokens than the test engine's context
USER = [{"role": "user", "content": "Hi"}]


def body(**kw):
    return json.dumps({"model": "embedded", "messages": USER, "max_tokens": 4, **kw})


CASES = [  # (id, path, raw body, status, param, code)
    ("malformed-json", "chat", '{"model": "embedded", "messages": [', 400, None, "invalid_json"),
    ("not-an-object", "chat", "[1, 2]", 400, None, "invalid_json"),
    ("not-utf8", "chat", b"\xff\xfe{}", 400, None, "invalid_json"),
    ("unknown-model", "chat", body(model="gpt-9"), 404, "model", "model_not_found"),
    ("missing-messages", "chat", json.dumps({"model": "embedded"}), 400, "messages", "missing_required_parameter"),
    ("empty-messages", "chat", body(messages=[]), 400, "messages", None),
    ("messages-not-list", "chat", body(messages="Hi"), 400, "messages", "invalid_type"),
    ("bad-role", "chat", body(messages=[{"role": "wizard", "content": "Hi"}]), 400, "messages.0.role", None),
    ("max-tokens-string", "chat", body(max_tokens="10"), 400, "max_tokens", "invalid_type"),
    ("max-tokens-float", "chat", body(max_tokens=2.5), 400, "max_tokens", "invalid_type"),
    ("max-tokens-negative", "chat", body(max_tokens=-5), 400, "max_tokens", "invalid_value"),
    ("max-tokens-zero", "chat", body(max_tokens=0), 400, "max_tokens", "invalid_value"),
    ("max-tokens-absurd", "chat", body(max_tokens=10**12), 400, "max_tokens", "invalid_value"),
    ("temperature-string", "chat", body(temperature="hot"), 400, "temperature", "invalid_type"),
    ("temperature-high", "chat", body(temperature=2.5), 400, "temperature", "invalid_value"),
    ("temperature-negative", "chat", body(temperature=-0.1), 400, "temperature", "invalid_value"),
    ("top-p-high", "chat", body(top_p=1.5), 400, "top_p", "invalid_value"),
    ("seed-string", "chat", body(seed="abc"), 400, "seed", "invalid_type"),
    ("stream-string", "chat", body(stream="yes"), 400, "stream", "invalid_type"),
    ("too-many-stops", "chat", body(stop=["a", "b", "c", "d", "e"]), 400, "stop", "invalid_value"),
    ("n-2", "chat", body(n=2), 400, "n", "invalid_value"),
    ("prompt-too-long", "chat", body(messages=[{"role": "user", "content": LONG}]), 400, "messages",
     "context_length_exceeded"),
    ("prompt-plus-answer-too-long", "chat", body(max_tokens=370), 400, "max_tokens", "context_length_exceeded"),
    ("completion-too-long", "completions", json.dumps({"model": "embedded", "prompt": LONG}), 400, "prompt",
     "context_length_exceeded"),
    ("completion-bad-ids", "completions", json.dumps({"model": "embedded", "prompt": [1, 2, 10**9]}), 400, "prompt",
     "invalid_value"),
    ("completion-prompt-type", "completions", json.dumps({"model": "embedded", "prompt": {"a": 1}}), 400, "prompt",
     "invalid_type"),
    ("completion-echo", "completions", json.dumps({"model": "embedded", "prompt": "a", "echo": True}), 400, "echo",
     "unsupported_parameter"),
]


def check_error(r: httpx.Response, status: int, param=None, code=None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"] and "Traceback" not in err["message"] and "File \"" not in err["message"]
    assert err["type"] == "invalid_request_error"
    if param is not None:
        assert err["param"] == param, err
    if code is not None:
        assert err["code"] == code, err
    return err


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_request(client, case):
    _, path, raw, status, param, code = case
    r = client.post(f"/v1/{'chat/completions' if path == 'chat' else 'completions'}", content=raw,
                    headers={"content-type": "application/json"})
    check_error(r, status, param, code)


def test_unknown_route_and_method(client):
    check_error(client.get("/v1/nothing"), 404, code="not_found")
    check_error(client.get("/v1/chat/completions"), 405, code="method_not_allowed")


def test_api_keys(keyed_server, api_key):
    with httpx.Client(base_url=keyed_server.url, timeout=60) as c:
        req = {"model": "embedded", "messages": USER, "max_tokens": 2}
        check_error(c.post("/v1/chat/completions", json=req), 401, code="missing_api_key")
        check_error(c.get("/v1/models"), 401, code="missing_api_key")
        wrong = {"Authorization": "Bearer sk-wrong"}
        check_error(c.post("/v1/chat/completions", json=req, headers=wrong), 401, code="invalid_api_key")
        check_error(c.post("/v1/completions", json={"model": "embedded", "prompt": "a"}, headers=wrong), 401,
                    code="invalid_api_key")
        check_error(c.get("/v1/models", headers={"Authorization": api_key}), 401, code="invalid_api_key")
        good = {"Authorization": f"Bearer {api_key}"}
        assert c.post("/v1/chat/completions", json=req, headers=good).status_code == 200
        assert c.get("/v1/models", headers=good).json()["data"][0]["id"] == "embedded"
        assert c.get("/health").status_code == 200


def test_bad_requests_do_not_disturb_a_stream(server, client, llm, wait_idle):
    """A streamed answer in flight while every bad request above arrives: it completes, and
    exactly as the offline engine would have answered."""
    messages = [{"role": "user", "content": "Name three fruits."}]
    got: dict = {}

    def stream() -> None:
        with httpx.Client(base_url=server.url, timeout=120) as c, c.stream(
                "POST", "/v1/chat/completions",
                json={"model": "embedded", "messages": messages, "max_tokens": 16, "temperature": 0, "stream": True}) as r:
            got["lines"] = [line for line in r.iter_lines() if line.startswith("data: ")]

    t = threading.Thread(target=stream)
    t.start()
    for _, path, raw, status, _, _ in CASES:
        r = client.post(f"/v1/{'chat/completions' if path == 'chat' else 'completions'}", content=raw,
                        headers={"content-type": "application/json"})
        assert r.status_code == status
    t.join(120)
    assert got["lines"][-1] == "data: [DONE]"
    text = "".join(json.loads(x[6:])["choices"][0]["delta"].get("content") or "" for x in got["lines"][:-1])
    want = llm.generate([llm.tokenizer.encode_chat(messages)], SamplingParams(temperature=0, max_tokens=16))[0]
    assert text == want.text
    assert wait_idle()["blocks_used"] == 0


def test_oversized_body(client):
    huge = b'{"model": "embedded", "prompt": "' + b"a" * (9 << 20) + b'"}'
    check_error(client.post("/v1/completions", content=huge, headers={"content-type": "application/json"}),
                413, code="request_too_large")
