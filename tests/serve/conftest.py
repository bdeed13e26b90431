"""One real engine on the embedded model per test process, and API servers on loopback.

The engine is small on purpose (a short context, few blocks) so that "longer than the
context" is cheap to provoke and "every block is free again" is quick to check.
"""
from __future__ import annotations

import time

import pytest

MODEL = "embedded"
MAX_MODEL_LEN = 384
API_KEY = "sk-labkit-test"


@pytest.fixture(scope="session")
def llm():
    from labkit.engine import LLM

    engine = LLM(MODEL, num_blocks=160, block_size=16, max_batch_size=16, max_model_len=MAX_MODEL_LEN)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def server(llm):
    from labkit.serve.api_server import ServerThread, create_app

    with ServerThread(create_app(llm, MODEL)) as srv:
        yield srv


@pytest.fixture(scope="session")
def keyed_server(llm):
    from labkit.serve.api_server import ServerThread, create_app

    with ServerThread(create_app(llm, MODEL, api_keys=[API_KEY])) as srv:
        yield srv


@pytest.fixture
def api_key() -> str:
    return API_KEY


@pytest.fixture
def client(server):
    import httpx

    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


@pytest.fixture
def wait_idle(llm):
    """Wait until no request runs or waits and every KV block is free (blocks that keep
    prefix-cache content count as free: the cache holds them only until they are needed)."""

    def wait(timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            s = llm.stats()
            if (s["running"] == 0 and s["waiting"] == 0 and s["blocks_used"] == 0) or time.monotonic() > deadline:
                return s
            time.sleep(0.05)

    return wait


@pytest.fixture
def chat():
    """A greedy, short chat request body."""

    def body(content: str, max_tokens: int = 6, **extra) -> dict:
        return {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
                "temperature": 0, **extra}

    return body
