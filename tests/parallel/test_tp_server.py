"""`labkit serve api_server MODEL --tp 2` as a user runs it: the official `openai` client gets
the one-process answers; a killed rank ends the server with one clear line within seconds;
Ctrl-C (SIGINT to the whole process group, as a terminal sends it) stops every rank."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.slow   # a server process and its second rank (~10-20 s to start)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(folder, port: int) -> subprocess.Popen:
    """The server in a session of its own (so the test can signal its whole process group),
    once /health answers."""
    proc = subprocess.Popen([sys.executable, "-m", "labkit", "serve", "api_server", str(folder), "--tp", "2",
                             "--server-port", str(port), "--max-batch-size", "4", "--max-model-len", "256",
                             "--weights", "fp32"],   # as stored (a CPU's default is bf16)
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the server exited: {proc.stderr.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the server did not come up"
        time.sleep(0.3)


def other_ranks(pid: int) -> list[int]:
    """The processes the server spawned to be ranks 1.. (not multiprocessing's resource tracker)."""
    ranks = []
    for proc in Path("/proc").iterdir():
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):   # not a process, or one that just ended
            continue
        if ppid == pid and "spawn_main" in args:
            ranks.append(int(proc.name))
    return ranks


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = open(f"/proc/{pid}/stat").read().split()[2] if os.path.exists(f"/proc/{pid}/stat") else "X"
    return state != "Z"   # a zombie has exited (its parent has not reaped it yet)


@pytest.fixture
def server(full_dir):
    port = free_port()
    proc = start_server(full_dir, port)
    yield proc, port
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)


def test_openai_client_gets_the_one_process_answers(server, full_dir, h):
    from labkit.engine import LLM
    from labkit.models.sampling import SamplingParams

    proc, port = server
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=120)
    served = [client.completions.create(model=str(full_dir), prompt=p, max_tokens=8, temperature=0).choices[0].text
              for p in h.PROMPTS]
    with LLM(str(full_dir), **h.ENGINE) as one:
        local = [o.text for o in one.generate(h.PROMPTS, SamplingParams(temperature=0, max_tokens=8))]
    assert served == local
    ranks = other_ranks(proc.pid)
    assert len(ranks) == 1

    os.kill(ranks[0], signal.SIGKILL)   # a rank dies: the server ends, it does not hang
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 1
    assert "tensor-parallel rank 1" in err and "killed by signal 9" in err


def test_ctrl_c_stops_every_rank(server):
    proc, _ = server
    ranks = other_ranks(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode in (0, 130), err
    assert "Traceback" not in err and "tensor-parallel rank" not in err
    deadline = time.monotonic() + 10
    while any(alive(p) for p in ranks) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ranks and not any(alive(p) for p in ranks)
