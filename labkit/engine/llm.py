"""`LLM`: the engine's front object, offline (`generate`, `chat`) and online (`stream`).

Offline calls run engine steps in the calling thread until their requests finish. Streaming
clients are served by one background thread that runs steps while there is work, so many
concurrent `stream()` calls from an asyncio server share one continuous batch. Both kinds of
caller take the same lock around a step, so they can be mixed freely: any step advances
every request.

A server process should run the steps in its main thread instead (`run_steps`, with the HTTP
server in a background thread): on a CPU, PyTorch's OpenMP threads spin between the many
small parallel operations of a decode step, but only while the process has no more OpenMP
threads than cores. A second thread doing parallel work (the background stepper, once the
main thread has loaded the model) doubles the count, OpenMP then sleeps between operations,
and a decode step gets 2-3x slower (docs/benchmarks.md, "Serving").
"""
from __future__ import annotations

import asyncio
import collections
import threading
import time
from dataclasses import dataclass, field, replace
from typing import AsyncIterator, Callable

import torch

from labkit.engine.config import EngineConfig
from labkit.engine.engine import Engine, Request, StreamDelta
from labkit.engine.fuse import fuse_projections
from labkit.engine.kv_cache import PagedKVCache, blocks_for_memory, bytes_per_block
from labkit.engine.sequence import Sequence
from labkit.models.llama import Llama
from labkit.models.sampling import SamplingParams
from labkit.models.tokenizer import Tokenizer


@dataclass
class RequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    token_ids: list[int]
    text: str
    finish_reason: str            # "stop" | "length" | "abort"
    cached_tokens: int            # prompt tokens served by the prefix cache
    arrival_time: float = 0.0
    first_token_time: float | None = None
    finish_time: float | None = None
    token_times: list[float] = field(default_factory=list)

    @property
    def ttft(self) -> float | None:
        return None if self.first_token_time is None else self.first_token_time - self.arrival_time


@dataclass
class ChatSession:
    """A conversation: `LLM.chat` appends the user's message and the answer to `messages`."""
    system: str | None = None
    messages: list[dict] = field(default_factory=list)
    outputs: list[RequestOutput] = field(default_factory=list)   # one per turn

    def render(self) -> list[dict]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.messages


class LLM:
    def __init__(self, model: str | Llama = "embedded", *, backend: str = "torch", device: str | None = None,
                 quant_policy: int = 0, max_batch_size: int = 32, cache_max_entry_count: float = 0.5,
                 num_blocks: int | None = None, block_size: int = 16, enable_prefix_caching: bool = True,
                 max_model_len: int | None = None, scheduler: str = "continuous",
                 tokenizer: Tokenizer | None = None, dtype: torch.dtype | None = None, weights: str | None = None,
                 max_num_batched_tokens: int | None = None, use_cuda_graph: bool | None = None,
                 record_timeline: bool = False, compile: bool = False, tp: int = 1):
        """`model` is a MODEL spec ('embedded', a folder, a hub id) or a built `Llama` (then pass
        `tokenizer`). The KV cache gets `num_blocks` blocks, or `cache_max_entry_count` of the
        free memory (capped at what `max_batch_size` requests of `max_model_len` tokens use).
        `weights` ('fp32', 'bf16', 'int8', 'int4') converts a full-precision model at load time
        for speed; a quantized checkpoint runs as stored, on a CPU repacked for PyTorch's packed
        CPU kernels (labkit.engine.weights; a model object passed in is converted in place, and
        its q/k/v and gate/up projections are merged, labkit.engine.fuse). `compile` runs the
        decode step through torch.compile: before capturing it in CUDA graphs on a GPU, in place
        of the eager step on a CPU, where it fuses the small operations around the matmuls;
        `warmup()` compiles each kind of step up front. `tp` > 1 splits the model over
        that many GPUs (or CPU processes): this process is rank 0 and starts the others, each
        built with these same arguments (labkit.engine.parallel, docs/parallel.md). The engine's
        options are checked here, before anything loads, as one `EngineConfig`."""
        args = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        config = EngineConfig(backend=backend, max_batch_size=max_batch_size,
                              max_num_batched_tokens=max_num_batched_tokens, max_model_len=max_model_len,
                              enable_prefix_caching=enable_prefix_caching, scheduler=scheduler,
                              use_cuda_graph=use_cuda_graph, record_timeline=record_timeline, compile=compile)
        if not 0 < cache_max_entry_count <= 1:
            raise ValueError(f"cache_max_entry_count must be in (0, 1], got {cache_max_entry_count}")
        self.tp = None
        if tp > 1:
            if compile:
                raise ValueError("compile=True does not work with tp > 1 yet")
            from labkit.engine.parallel import TensorParallel

            self.tp = TensorParallel.start(tp, device, args)
        if isinstance(model, Llama):
            if tokenizer is None:
                raise ValueError("pass tokenizer= along with a model object")
            self.model = model if self.tp is None else self.tp.shard(model)
        elif self.tp is not None:
            self.model, tokenizer = self.tp.load(model, dtype, backend)
        else:
            from labkit.loading import load_model

            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            self.model, tokenizer = load_model(model, device=device, dtype=dtype, backend=backend)
        fuse_projections(self.model)   # q/k/v and gate/up as one matmul each (labkit.engine.fuse)
        from labkit.engine.weights import convert

        self.model = convert(self.model, weights, backend, tokenizer)   # a quantized checkpoint on a CPU: repacked
        self.model.eval()
        if self.tp is not None:
            self.tp.gather_logits(self.model)
        self.tokenizer = tokenizer
        cfg, dev = self.model.config, self.model.model.embed_tokens.weight.device
        kv_dtype = self.model.model.embed_tokens.weight.dtype
        limit = max_model_len or cfg.max_position_embeddings
        if num_blocks is None:
            num_blocks = blocks_for_memory(bytes_per_block(cfg, block_size, kv_dtype, quant_policy), dev,
                                           cache_max_entry_count, max_batch_size * -(-limit // block_size))
            if self.tp is not None:
                num_blocks = self.tp.agree(num_blocks)
        if max_model_len is not None and max_model_len > num_blocks * block_size:
            raise ValueError(f"max_model_len {max_model_len} does not fit in the KV cache "
                             f"({num_blocks} blocks x {block_size} tokens = {num_blocks * block_size})")
        self.max_model_len = min(limit, num_blocks * block_size)
        kv = PagedKVCache(cfg, num_blocks, block_size, kv_dtype, dev, quant_policy)
        config = replace(config, max_model_len=self.max_model_len,
                         max_num_batched_tokens=max_num_batched_tokens or (2048 if dev.type == "cuda" else 512))
        self.engine = Engine(self.model, tokenizer, kv, config)
        self.compiled = compile
        if self.tp is not None:
            self.tp.attach(self.engine.runner)
        self._lock = threading.Lock()       # one step at a time
        self._wakeup = threading.Event()
        self._worker: threading.Thread | None = None
        self._worker_lock = threading.Lock()
        self._stepper: int | None = None     # the thread running `run_steps`, if any
        self._closed = False

    # ------------------------------------------------------------------ requests
    def validate_prompt(self, prompt_ids: list[int], params: SamplingParams | None = None) -> None:
        """Raise ValueError unless the prompt leaves room for at least one output token."""
        if not prompt_ids:
            raise ValueError("the prompt is empty")
        if len(prompt_ids) >= self.max_model_len:
            raise ValueError(f"the prompt has {len(prompt_ids)} tokens, but this engine takes at most "
                             f"{self.max_model_len - 1} (max_model_len {self.max_model_len} counts prompt + output)")

    def _sequence(self, prompt: str | list[int], params: SamplingParams | None, request_id: str | None) -> Sequence:
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        params = params or SamplingParams()
        self.validate_prompt(ids, params)
        return Sequence(ids, params, request_id or "",
                        max_tokens=min(params.max_tokens, self.max_model_len - len(ids)))

    def generate(self, prompts: list[str] | list[list[int]] | str, params: SamplingParams | list[SamplingParams] | None = None,
                 use_tqdm: bool = False) -> list[RequestOutput]:
        """Run a batch of prompts to completion; outputs in the order of the prompts."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        params_list = params if isinstance(params, list) else [params] * len(prompts)
        if len(params_list) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(params_list)} sampling params")
        seqs = [self._sequence(p, sp, None) for p, sp in zip(prompts, params_list)]
        requests = [self.engine.add(seq) for seq in seqs]
        self._wakeup.set()
        bar = _bar(len(seqs), use_tqdm)
        left = collections.deque(seqs)   # not yet seen finished; checked from the oldest (O(1) a step, not O(prompts))
        while _drop_finished(left):
            with self._lock:
                if _drop_finished(left):
                    self._step()
            if bar is not None:
                bar.update(len(seqs) - len(left) - bar.n)
        if bar is not None:
            bar.close()
        return [_output(r) for r in requests]

    def chat(self, session: ChatSession, message: str, params: SamplingParams | None = None) -> str:
        """One turn: the whole conversation is the prompt; the prefix cache holds the history,
        so only the new message (and the previous answer's tail) is computed."""
        session.messages.append({"role": "user", "content": message})
        out = self.generate([self.tokenizer.encode_chat(session.render())], params)[0]
        session.messages.append({"role": "assistant", "content": out.text})
        session.outputs.append(out)
        return out.text

    async def stream(self, prompt: str | list[int], params: SamplingParams | None = None,
                     request_id: str | None = None) -> AsyncIterator[StreamDelta]:
        """Yield a `StreamDelta` per new token. Stopping early (break, aclose, cancellation)
        aborts the request and frees its blocks."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        seq = self._sequence(prompt, params, request_id)

        def on_delta(delta: StreamDelta | BaseException):   # runs on the engine's thread
            try:
                loop.call_soon_threadsafe(queue.put_nowait, delta)
            except RuntimeError:   # the consumer's loop is closed: nobody listens any more
                self.engine.abort(seq.request_id)

        self.engine.add(seq, on_delta)
        self._ensure_worker()
        finished = False
        try:
            while True:
                delta = await queue.get()
                if isinstance(delta, BaseException):
                    finished = True
                    raise delta
                finished = delta.finished
                yield delta
                if finished:
                    return
        finally:
            if not finished:
                self.abort(seq.request_id)

    def abort(self, request_id: str) -> None:
        """Stop a request; its blocks are freed at once if the engine is idle, else before the next step."""
        self.engine.abort(request_id)
        self._wakeup.set()
        if self._lock.acquire(blocking=False):
            try:
                self.engine.drain()
            finally:
                self._lock.release()

    # ------------------------------------------------------------------ the step loop
    def _step(self) -> None:
        try:
            self.engine.step()
        except Exception as e:   # fail the requests in flight, keep the engine usable
            self.engine.fail_all(e)
            raise

    def _ensure_worker(self) -> None:
        """Make sure someone runs the steps: `run_steps` if a thread is in it, else the background worker."""
        self._wakeup.set()
        with self._worker_lock:
            if self._stepper is None and (self._worker is None or not self._worker.is_alive()):
                self._worker = threading.Thread(target=self._loop, args=(lambda: self._stepper is not None, 1.0),
                                                name="labkit-engine", daemon=True)
                self._worker.start()

    def run_steps(self, until: Callable[[], bool], poll_s: float = 0.1) -> None:
        """Run the engine's steps in the calling thread until `until()` is true (checked at
        least every `poll_s` seconds): streams started meanwhile are served from here, and the
        background worker stands down. Work left when it returns goes back to the worker.
        Servers call it from their main thread (see the module's docstring for why)."""
        with self._worker_lock:
            if self._stepper is not None:
                raise RuntimeError("run_steps is already running in another thread")
            self._stepper = threading.get_ident()
        self._wakeup.set()   # a background worker sees the stepper and stops
        try:
            self._loop(until, poll_s)
        finally:
            with self._worker_lock:
                self._stepper = None
            if self.engine.has_work():
                self._ensure_worker()

    def _loop(self, until: Callable[[], bool], poll_s: float) -> None:
        while not self._closed and not until():
            if not self.engine.has_work():
                self._wakeup.wait(timeout=poll_s)
                self._wakeup.clear()
                continue
            with self._lock:
                try:
                    self._step()
                except Exception:   # already handed to the requests' clients
                    pass
            time.sleep(0)   # let a waiting generate() or abort() take the lock between steps

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()
        if self._worker is not None:
            self._worker.join(timeout=5)
        if self.tp is not None:
            self.tp.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def warmup(self, progress: Callable[[str], None] | None = None) -> None:
        """Run every kind of decode step once, so that a compiled engine compiles now, not
        while a request waits: batch 1 (one context, no mask) and a batch of several rows
        (masked; its sizes are symbolic, so other batch sizes and contexts reuse it). On a GPU
        the graphs were captured, compiled, when the engine was built; eagerly there is
        nothing to prepare. `progress` gets a line per kind of step."""
        if not self.compiled or self.engine.runner.graphs:
            return
        kinds = sorted({1, min(3, self.engine.scheduler.max_batch_size)})
        for i, batch in enumerate(kinds, 1):
            name = "batch 1" if batch == 1 else "batch 2+"
            start = time.perf_counter()
            if progress:
                progress(f"compiling the decode step at {name} ({i}/{len(kinds)})")
            # Sizes that match none of the model's (Dynamo would tie the two together, and a
            # later step whose sizes differ would compile again): 3 rows, contexts over 5
            # blocks (a block table of width 1 is a kind of its own: contexts within one block).
            length = min(4 * self.engine.kv.block_size + 2, self.max_model_len - 3)
            prompts = [list(range(1 + row, 1 + row + length)) for row in range(batch)]
            self.generate(prompts, SamplingParams(temperature=0, max_tokens=2, ignore_eos=True))
            if progress:
                progress(f"compiled the decode step at {name} in {time.perf_counter() - start:.0f} s ({i}/{len(kinds)})")

    # ------------------------------------------------------------------ counters
    def stats(self) -> dict:
        return self.engine.stats() | {"max_model_len": self.max_model_len}

    @property
    def timeline(self):
        return list(self.engine.timeline or [])


def _output(req: Request) -> RequestOutput:
    s = req.seq
    return RequestOutput(s.request_id, s.prompt_token_ids, s.output_token_ids, req.text, s.finish_reason,
                         s.cached_tokens, s.arrival_time, s.first_token_time, req.finish_time, req.token_times)


def _drop_finished(left: collections.deque[Sequence]) -> bool:
    """Drop the finished sequences at the front of `left`; whether any is left. Requests
    finish roughly in the order they came, so this stays cheap with thousands queued."""
    while left and left[0].is_finished:
        left.popleft()
    return bool(left)


def _bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="requests", leave=False)
