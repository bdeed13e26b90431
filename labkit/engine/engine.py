"""The engine's step loop: schedule, run the model, sample, detokenize, finish.

`Engine.step()` is everything that happens between two forward passes. It is single-threaded
by design; other threads hand it requests and aborts through two queues that it drains at
the start of each step (`LLM` runs steps from a background thread for streaming clients).
Every step produces `StreamDelta`s, delivered to the callback each request came with.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import torch

from labkit.engine.block_manager import BlockManager
from labkit.engine.config import EngineConfig
from labkit.engine.kv_cache import PagedKVCache
from labkit.engine.model_runner import ModelRunner
from labkit.engine.scheduler import Scheduler
from labkit.engine.sequence import Sequence, Status
from labkit.models.llama import Llama
from labkit.models.sampling import sample_rows
from labkit.models.tokenizer import StreamDecoder, Tokenizer


@dataclass
class StreamDelta:
    """What one step added to one request (the unit `LLM.stream` yields)."""
    request_id: str
    text: str                      # new text only (held back while it may be a stop string's start)
    token_ids: list[int]           # new token ids
    finished: bool
    finish_reason: str | None      # "stop" | "length" | "abort" once finished
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int             # prompt tokens served by the prefix cache


@dataclass
class StepRecord:
    """One step, for the scheduler timeline: which request ran what."""
    step: int
    work: list[tuple[str, str, int]]       # (request_id, "prefill" | "decode" | "padding", tokens)
    preempted: list[str]
    finished: list[str]
    seconds: float
    blocks_used: int


# a request's client: called with a delta per new token (the last one finished), or with the
# exception that ended the request when a step failed (`Engine.fail_all`)
OnDelta = Callable[[StreamDelta | BaseException], None]


@dataclass
class Request:
    seq: Sequence
    decoder: StreamDecoder
    on_delta: OnDelta | None = None
    text: str = ""
    finish_time: float | None = None
    token_times: list[float] = field(default_factory=list)


class Engine:
    def __init__(self, model: Llama, tokenizer: Tokenizer, kv: PagedKVCache, config: EngineConfig = EngineConfig()):
        self.model, self.tokenizer, self.kv, self.config = model, tokenizer, kv, config
        self.block_manager = BlockManager(kv.num_blocks, kv.block_size, config.enable_prefix_caching)
        self.scheduler = Scheduler(self.block_manager, config.max_batch_size, config.max_num_batched_tokens,
                                   config.scheduler)
        self.runner = ModelRunner(model, kv, config)
        self.eos_ids = set(model.config.eos_ids) | tokenizer.eos_token_ids
        self.requests: dict[str, Request] = {}
        self._adds: deque[Request] = deque()
        self._aborts: deque[str] = deque()
        self.timeline: deque[StepRecord] | None = deque(maxlen=100_000) if config.record_timeline else None
        self.steps = 0
        self.last_decode_tok_s = 0.0

    # ------------------------------------------------------------------ requests (any thread)
    def add(self, seq: Sequence, on_delta: OnDelta | None = None) -> Request:
        req = Request(seq, StreamDecoder(self.tokenizer, seq.params.stop), on_delta)
        self._adds.append(req)
        return req

    def abort(self, request_id: str) -> None:
        self._aborts.append(request_id)

    def has_work(self) -> bool:
        return bool(self._adds or self._aborts or self.scheduler.has_work())

    # ------------------------------------------------------------------ the step (one thread)
    def drain(self) -> None:
        """Take in queued requests and aborts."""
        while self._adds:
            req = self._adds.popleft()
            if req.seq.request_id in self.requests:
                self._fail(req, ValueError(f"request id {req.seq.request_id!r} is already running"))
                continue
            self.requests[req.seq.request_id] = req
            self.scheduler.add(req.seq)
        while self._aborts:
            req = self.requests.get(self._aborts.popleft())
            if req is not None:
                self._finish(req, "abort")

    def step(self) -> list[StreamDelta]:
        self.drain()
        batch = self.scheduler.schedule()
        if not batch:
            return []
        work = [(s.request_id, "decode" if n == 1 and s.num_output_tokens else "prefill", n)
                for s, n in zip(batch.seqs, batch.num_tokens)] + [(s.request_id, "padding", 1) for s in batch.padding]
        start = time.perf_counter()
        logits, sampling = self.runner.run(batch)
        self.scheduler.postprocess(batch)
        tokens = self.sample(logits, sampling)
        now = time.perf_counter()
        deltas, finished = [], []
        for seq, token in zip(sampling, tokens):
            req = self.requests[seq.request_id]
            delta = self._append(req, token, now)
            deltas.append(delta)
            if delta.finished:
                finished.append(seq.request_id)
        if all(n == 1 for n in batch.num_tokens):
            self.last_decode_tok_s = len(batch) / (now - start)
        if self.timeline is not None:
            self.timeline.append(StepRecord(
                self.steps, work, [s.request_id for s in batch.preempted], finished, now - start,
                self.block_manager.num_blocks - self.block_manager.num_free))
        self.steps += 1
        for delta in deltas:
            self._deliver(self.requests.pop(delta.request_id) if delta.finished else self.requests[delta.request_id], delta)
        return deltas

    def sample(self, logits: torch.Tensor, seqs: list[Sequence]) -> list[int]:
        """The step's next tokens, every row with its own parameters and seed, all rows at once."""
        if not seqs:
            return []
        seen = [torch.tensor(s.token_ids) if s.params.repetition_penalty != 1.0 else None for s in seqs]
        return sample_rows(logits, [s.params for s in seqs], seen, [s.generator for s in seqs])

    def _append(self, req: Request, token: int, now: float) -> StreamDelta:
        seq = req.seq
        seq.token_ids.append(token)
        seq.first_token_time = seq.first_token_time or now
        req.token_times.append(now)
        text = req.decoder.push(token)
        reason = None
        if req.decoder.stopped or (token in self.eos_ids and not seq.params.ignore_eos):
            reason = "stop"
        elif seq.num_output_tokens >= seq.max_tokens:
            reason = "length"
        if reason:
            text += req.decoder.finish()
            self.scheduler.finish(seq, reason)
            req.finish_time = now
        req.text += text
        return self._delta(req, text, [token])

    def _finish(self, req: Request, reason: str) -> None:
        """End a request from outside the step (abort): free its blocks, tell its client."""
        self.scheduler.finish(req.seq, reason)
        req.finish_time = time.perf_counter()
        self._deliver(self.requests.pop(req.seq.request_id), self._delta(req, "", []))

    def _delta(self, req: Request, text: str, token_ids: list[int]) -> StreamDelta:
        seq = req.seq
        return StreamDelta(seq.request_id, text, token_ids, seq.is_finished, seq.finish_reason,
                           seq.num_prompt_tokens, seq.num_output_tokens, seq.cached_tokens)

    def _deliver(self, req: Request, delta: StreamDelta | BaseException) -> None:
        if req.on_delta is not None:
            req.on_delta(delta)

    def _fail(self, req: Request, error: BaseException) -> None:
        req.seq.status, req.seq.finish_reason = Status.FINISHED, "abort"
        self._deliver(req, error)

    def fail_all(self, error: BaseException) -> None:
        """A step raised: end every request (blocks freed) and hand each client the error."""
        self.drain()
        for req in list(self.requests.values()):
            self.scheduler.finish(req.seq, "abort")
            self._fail(self.requests.pop(req.seq.request_id), error)

    # ------------------------------------------------------------------ counters
    def stats(self) -> dict:
        bm = self.block_manager
        return {"blocks_total": bm.num_blocks, "blocks_free": bm.num_free, "blocks_used": bm.num_blocks - bm.num_free,
                "blocks_cached": bm.num_cached_free, "block_size": bm.block_size,
                "prefix_cache_hit_tokens": bm.hit_tokens, "running": len(self.scheduler.running),
                "waiting": len(self.scheduler.waiting) + len(self._adds), "steps": self.steps,
                "last_decode_tok_s": round(self.last_decode_tok_s, 2)}
