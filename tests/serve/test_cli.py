"""The commands as a user runs them: `labkit serve api_server`, `labkit chat --cli`,
`labkit bench serve`. Bad options are one line and exit 2, never a traceback."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

SMALL = ["--max-batch-size", "4", "--max-model-len", "256"]


def labkit(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labkit", *args], capture_output=True, text=True, timeout=180, **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(proc: subprocess.Popen, url: str, seconds: float) -> None:
    """Poll `url` until it answers 200; fail if the process ends or the time runs out."""
    deadline = time.monotonic() + seconds
    while True:
        assert proc.poll() is None, proc.stderr.read()
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} did not come up"
        time.sleep(0.2)


@pytest.mark.parametrize("args, message", [
    (["serve", "api_server", "--server-port", "23333", "--cache-max-entry-count", "2"], "--cache-max-entry-count"),
    (["serve", "api_server", "/no/such/model", "--server-port", "0"], "no such model"),
    (["chat", "--cli", "--top-p", "0"], "top_p"),
    (["bench", "serve", "--requests", "0"], "must be >= 1"),
    (["serve", "api_server", "--server-port", "99999"], "0 to 65535"),
    (["serve", "api_server", "--server-port", "-1"], "0 to 65535"),
    (["chat", "--server-port", "99999", "--no-browser"], "0 to 65535"),   # before the model loads
])
def test_bad_options_are_one_line(args, message):
    r = labkit(*args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize("command", [["serve", "api_server"], ["chat", "--no-browser"]])
def test_port_taken_is_one_line(command):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = labkit(*command, "--server-port", str(s.getsockname()[1]))
    assert r.returncode == 2 and "cannot listen" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_api_server_command():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "labkit", "serve", "api_server", "--server-port", str(port),
                             "--api-keys", "k1", "k2", *SMALL], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(proc, f"{url}/health", 120)
        r = httpx.post(f"{url}/v1/chat/completions", headers={"Authorization": "Bearer k2"}, timeout=60,
                       json={"model": "embedded", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 3
        assert httpx.get(f"{url}/v1/models", timeout=5).status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode in (0, 130), err   # uvicorn re-raises the Ctrl-C it handled: 130
    assert "Traceback" not in err


def test_terminal_chat():
    r = labkit("chat", "--cli", "--temperature", "0", "--max-tokens", "8", *SMALL,
               input="What is the capital of France?\n/system You are terse.\nHi\n/exit\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("assistant>") == 2 and "Paris" in r.stdout
    assert "(conversation cleared)" in r.stdout


def test_bench_serve_json(capsys):
    from labkit.serve.bench import main

    assert main(["--concurrency", "1", "3", "--requests", "3", "--max-tokens", "4", "--json", *SMALL]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [lv["concurrency"] for lv in result["levels"]] == [1, 3]
    assert all(lv["completed"] == 3 and lv["failed"] == 0 for lv in result["levels"])
    assert result["levels"][1]["tokens_per_s"] > 0 and result["engine_stats_after"]["embedded"]["blocks_used"] == 0
    assert result["device"].startswith(("cpu", "NVIDIA")) and result["date"]
    assert result["summary"]["servers"]["embedded"]["decode_tok_s_1"] > 0


def test_bench_serve_summary_ratios():
    from labkit.serve.bench import summary
    from labkit.serve.client import LoadReport

    def report(c, tok_s, decode=None):
        return LoadReport(c, 4, 4, 0, 1.0, tok_s, None, None, None, None, decode_tok_s=decode)

    runs = {"fp": [[report(1, 10, 20.0), report(16, 40)], [report(1, 12, 22.0), report(16, 44)]],
            "w4": [[report(1, 30, 60.0), report(16, 100)], [report(1, 31, 70.0), report(16, 90)]]}
    s = summary(runs, {"hf": [20.0, 22.0]}, [1, 16])
    assert s["baselines"]["hf"] == 21.0
    assert s["servers"]["w4"]["decode_tok_s_1"] == 65.0 and s["servers"]["w4"]["x_hf"] == round(65 / 21, 2)
    assert s["servers"]["w4"]["tok_s_x_first"][16] == round(95 / 42, 2) and s["servers"]["fp"]["tok_s_x_first"][1] == 1.0



def test_chat_page_command_serves_and_stops_on_ctrl_c():
    """`labkit chat`: the page comes up (Gradio in a background thread, the engine's steps in
    the main thread) and Ctrl-C ends it without a traceback."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "labkit", "chat", "--no-browser", "--server-port", str(port), *SMALL],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_up(proc, f"http://127.0.0.1:{port}/", 150)
        assert proc.poll() is None   # still serving: the main thread is in the engine's step loop
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode in (0, 130), err
    assert "Traceback" not in err
