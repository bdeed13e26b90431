"""An OpenAI-compatible HTTP API over the engine: `create_app(llm)` and `ServerThread`.

Every request becomes one `llm.stream(...)` on the server's event loop, so concurrent HTTP
requests are concurrent engine sequences and share the continuous batch; nothing here
generates tokens itself. Streaming answers are server-sent events (`data: {...}` lines,
then `data: [DONE]`). The protocol details (schemas, validation, response objects) live in
`labkit.serve.protocol`; this module wires them to routes and makes three promises:

- bad input is a JSON error with a 4xx status, never a traceback (unexpected failures are a
  500 with the exception's type only; the traceback goes to the server's log);
- a client that goes away (mid-stream, or while waiting for a non-streamed answer) aborts
  its sequence, so its KV blocks go back to the pool at once;
- one request's failure touches no other request.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import socket
import threading
import time
from dataclasses import replace
from typing import Any, AsyncIterator, Awaitable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from labkit.models.sampling import SamplingParams
from labkit.serve import protocol as P
from labkit.serve.protocol import APIError

log = logging.getLogger("labkit.serve")

MAX_BODY_BYTES = 8 << 20          # a prompt that large cannot fit any context we serve anyway
DISCONNECT_POLL_S = 0.25          # how often a non-streamed request checks that its client is there


def create_app(llm, model_name: str = "embedded", api_keys: list[str] | None = None) -> FastAPI:
    """The FastAPI app serving `llm` under the name `model_name`.

    `api_keys`: when given, every /v1 route wants `Authorization: Bearer KEY` with one of them.
    """
    app = FastAPI(title="labkit OpenAI-compatible API", docs_url="/docs", redoc_url=None)
    app.state.llm, app.state.model_name = llm, model_name
    created = P.now()
    keys = [k for k in (api_keys or []) if k]
    _install_error_handlers(app)

    def authorize(request: Request) -> None:
        if not keys:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise APIError(401, "missing API key: send the header 'Authorization: Bearer YOUR_KEY'", code="missing_api_key")
        if scheme.lower() != "bearer" or not any(hmac.compare_digest(token.strip(), k) for k in keys):
            raise APIError(401, "incorrect API key", code="invalid_api_key")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        authorize(request)
        return P.models_list(model_name, created)

    @app.get("/stats")
    async def stats(request: Request) -> dict:
        """The engine's counters: KV blocks, prefix-cache hits, queue lengths."""
        authorize(request)
        return llm.stats()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        authorize(request)
        req = P.parse(P.ChatCompletionRequest, await _json_body(request))
        _check_model(req.model, model_name)
        params = P.sampling_params(req, llm.max_model_len)
        try:
            prompt = llm.tokenizer.encode_chat(req.chat_messages())
        except Exception as e:  # the template refuses some role orders (raise_exception)
            raise APIError(400, f"cannot apply the chat template: {e}", param="messages", code="invalid_value") from None
        explicit = (req.max_completion_tokens or req.max_tokens) is not None
        P.check_lengths(params, len(prompt), llm.max_model_len, explicit, "messages")
        rid = P.new_id("chatcmpl")
        if req.stream:
            return _sse(_chat_events(llm, prompt, params, rid, model_name, req.include_usage))
        text, reason, last = await _until_disconnected(request, _collect(llm.stream(prompt, params, request_id=rid)))
        return P.chat_completion(rid, model_name, text, reason, _usage(last, len(prompt)))

    @app.post("/v1/completions")
    async def completions(request: Request):
        authorize(request)
        req = P.parse(P.CompletionRequest, await _json_body(request))
        _check_model(req.model, model_name)
        params = P.sampling_params(req, llm.max_model_len)
        prompts = [_tokens(llm, p) for p in req.prompts()]
        if not prompts:
            raise APIError(400, "the prompt list is empty", param="prompt", code="invalid_value")
        per_prompt = [P.check_lengths(_copy(params), len(p), llm.max_model_len, req.max_tokens is not None, "prompt")
                      for p in prompts]
        rid = P.new_id("cmpl")
        streams = [llm.stream(p, sp, request_id=f"{rid}-{i}") for i, (p, sp) in enumerate(zip(prompts, per_prompt))]
        if req.stream:
            return _sse(_completion_events(streams, rid, model_name, req.include_usage, [len(p) for p in prompts]))
        results = await _until_disconnected(request, asyncio.gather(*(_collect(s) for s in streams)))
        use = _sum_usage([_usage(last, len(p)) for (_, _, last), p in zip(results, prompts)])
        return P.completion(rid, model_name, [(text, reason) for text, reason, _ in results], use)

    return app


# ---- request helpers --------------------------------------------------------------------------

async def _json_body(request: Request) -> Any:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:   # refuse before reading it all
        raise APIError(413, f"request body larger than {MAX_BODY_BYTES >> 20} MiB", code="request_too_large")
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise APIError(413, f"request body larger than {MAX_BODY_BYTES >> 20} MiB", code="request_too_large")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise APIError(400, f"malformed JSON in the request body: {e}", code="invalid_json") from None


def _check_model(asked: str, served: str) -> None:
    if asked != served:
        raise APIError(404, f"the model '{asked}' does not exist; this server serves '{served}'",
                       param="model", code="model_not_found")


def _tokens(llm, prompt: str | list[int]) -> list[int]:
    if isinstance(prompt, str):
        return llm.tokenizer.encode(prompt)
    vocab = llm.tokenizer.vocab_size
    if any(not 0 <= t < vocab for t in prompt):
        raise APIError(400, f"token ids must be in [0, {vocab})", param="prompt", code="invalid_value")
    return list(prompt)


def _copy(params: SamplingParams) -> SamplingParams:
    """One SamplingParams per prompt: `check_lengths` fits max_tokens to each prompt."""
    return replace(params, stop=list(params.stop))


def _usage(last, prompt_len: int) -> dict:
    if last is None:  # the engine finished without a single delta: nothing was generated
        return P.usage(prompt_len, 0)
    return P.usage(last.prompt_tokens or prompt_len, last.completion_tokens, last.cached_tokens or 0)


def _sum_usage(uses: list[dict]) -> dict:
    return P.usage(sum(u["prompt_tokens"] for u in uses), sum(u["completion_tokens"] for u in uses),
                   sum(u["prompt_tokens_details"]["cached_tokens"] for u in uses))


# ---- running streams ------------------------------------------------------------------------------

async def _collect(stream) -> tuple[str, str, Any]:
    """Drain one engine stream: (text, finish_reason, last delta)."""
    pieces, last = [], None
    try:
        async for delta in stream:
            pieces.append(delta.text)
            last = delta
    finally:
        await stream.aclose()
    return "".join(pieces), (last.finish_reason if last else None) or "stop", last


async def _until_disconnected(request: Request, work: Awaitable):
    """Await `work`, cancelling it (which aborts its sequences) if the client goes away."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                raise APIError(499, "client closed the request", code="client_closed")
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def _merge(streams: list) -> AsyncIterator[tuple[int, Any]]:
    """Interleave several engine streams as their deltas arrive: (index, delta)."""
    if len(streams) == 1:  # the common case needs no tasks
        try:
            async for d in streams[0]:
                yield 0, d
        finally:
            await streams[0].aclose()
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i: int, s) -> None:
        try:
            async for d in s:
                await queue.put((i, d, None))
        except Exception as e:
            await queue.put((i, None, e))
            return
        finally:
            await s.aclose()
        await queue.put((i, None, None))

    tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            i, d, err = await queue.get()
            if err is not None:
                raise err
            if d is None:
                remaining -= 1
            else:
                yield i, d
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _chat_events(llm, prompt: list[int], params, rid: str, model: str, include_usage: bool) -> AsyncIterator[dict]:
    created = P.now()
    stream = llm.stream(prompt, params, request_id=rid)
    yield P.chat_chunk(rid, model, {"role": "assistant", "content": ""}, created=created)
    last = None
    async for _, delta in _merge([stream]):
        if delta.text:
            yield P.chat_chunk(rid, model, {"content": delta.text}, created=created)
        last = delta
    yield P.chat_chunk(rid, model, {}, (last.finish_reason if last else None) or "stop", created=created)
    if include_usage:
        yield P.usage_chunk(rid, model, "chat.completion.chunk", _usage(last, len(prompt)), created=created)


async def _completion_events(streams: list, rid: str, model: str, include_usage: bool,
                             prompt_lens: list[int]) -> AsyncIterator[dict]:
    created = P.now()
    last: dict[int, Any] = {}
    async for i, delta in _merge(streams):
        last[i] = delta
        if delta.text or delta.finished:
            reason = (delta.finish_reason or "stop") if delta.finished else None
            yield P.completion_chunk(rid, model, i, delta.text, reason, created=created)
    if include_usage:
        use = _sum_usage([_usage(last.get(i), n) for i, n in enumerate(prompt_lens)])
        yield P.usage_chunk(rid, model, "text_completion", use, created=created)


def _sse(events: AsyncIterator[dict]) -> StreamingResponse:
    """Server-sent events: one `data:` line per object, then `data: [DONE]`.

    An engine failure after the headers went out cannot change the status any more; it is
    sent as one `data: {"error": ...}` event before [DONE], the way OpenAI does.
    """

    async def body() -> AsyncIterator[str]:
        try:
            async for obj in events:
                yield f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
        except APIError as e:
            yield f"data: {json.dumps(e.body())}\n\n"
        except Exception as e:
            log.exception("stream failed")
            yield f"data: {json.dumps(_server_error(e).body())}\n\n"
        finally:
            await events.aclose()  # type: ignore[attr-defined]
        yield "data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


# ---- errors ------------------------------------------------------------------------------------------

def _server_error(e: Exception) -> APIError:
    return APIError(500, f"internal error ({type(e).__name__}); see the server log", type="server_error")


def _error_response(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(_: Request, e: APIError):
        return _error_response(e)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, e: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code)
        return _error_response(APIError(e.status_code, str(e.detail), code=code))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, e: RequestValidationError):
        return _error_response(APIError(400, f"invalid request: {e.errors()[0].get('msg', e)}"))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, e: Exception):
        log.exception("request failed")
        return _error_response(_server_error(e))


# ---- running the server ---------------------------------------------------------------------------------

class ServerThread:
    """uvicorn serving `app` from a background thread: for notebooks, tests and benchmarks.

    The socket is bound here, before the thread starts, so `port=0` picks a free port and
    `url` is known at once. Use as a context manager, or call `start()` and `stop()`.
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
                 sock: socket.socket | None = None):
        import uvicorn

        self.sock = sock or bind(host, port)
        self.host, self.port = (host if sock is None else self.sock.getsockname()[0]), self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level=log_level, access_log=log_level == "info", lifespan="off",
                                timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name=f"labkit-api-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the API server did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or a one-line UserError (port taken, unknown address)."""
    from labkit.errors import UserError

    if not 0 <= port <= 65535:
        raise UserError(f"cannot listen on {host}:{port}: a port is a number from 0 to 65535")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def serve(app, llm, sock: socket.socket) -> None:
    """Serve until Ctrl-C (what `labkit serve api_server` does): uvicorn from a background
    thread, the engine's steps in this one (`LLM.run_steps` says why). `sock` comes from
    `bind`, so that a taken port fails before slow work such as loading a model."""
    with ServerThread(app, sock=sock, log_level="info") as server:
        llm.run_steps(until=lambda: not server.thread.is_alive())
