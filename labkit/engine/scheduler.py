"""Which requests run in the next step, and how many of their tokens.

Continuous batching (Orca, vLLM): the batch is rebuilt at every step. Running decodes go first
(one token each), then prefills continue or start in chunks of the remaining token budget, so
a long prompt never stalls the requests already generating. A request joins as soon as the
block manager can hold its prompt and leaves the moment it finishes. When a decode needs a
block and none is free, the newest running request is preempted: its blocks are released and
it goes back to the front of the queue, to be recomputed later (cheap with prefix caching).

Static batching, kept for comparison: a batch is admitted only when the previous one has
completely finished; each request reserves blocks for its whole output up front (as a
contiguous cache would), and a finished row stays in the batch as padding, computed and
thrown away at every step, until the longest one is done (what `generate` on a padded
batch does).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from labkit.engine.block_manager import BlockManager
from labkit.engine.sequence import Sequence, Status


@dataclass
class Batch:
    """One step's work: for each sequence, how many of its uncomputed tokens run now."""
    seqs: list[Sequence] = field(default_factory=list)
    num_tokens: list[int] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)
    padding: list[Sequence] = field(default_factory=list)   # static mode: finished rows still computed

    def add(self, seq: Sequence, n: int) -> None:
        self.seqs.append(seq)
        self.num_tokens.append(n)

    def __len__(self) -> int:
        return len(self.seqs)


class Scheduler:
    def __init__(self, block_manager: BlockManager, max_batch_size: int = 32,
                 max_num_batched_tokens: int = 512, mode: str = "continuous"):
        if mode not in ("continuous", "static"):
            raise ValueError(f"scheduler must be 'continuous' or 'static', got {mode!r}")
        self.bm, self.max_batch_size, self.mode = block_manager, max_batch_size, mode
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []   # in admission order: the newest is last
        self.padding: list[Sequence] = []   # static mode: finished, blocks held until the batch ends

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running or self.padding)

    def schedule(self) -> Batch:
        return self._schedule_static() if self.mode == "static" else self._schedule_continuous()

    def _schedule_continuous(self) -> Batch:
        batch, budget = Batch(), self.max_num_batched_tokens
        # 1. Decodes, oldest first. Out of blocks: preempt the newest until this one fits.
        decodes = deque(s for s in self.running if s.num_uncomputed == 1)
        while decodes:
            seq = decodes.popleft()
            while not self.bm.can_append(seq):
                victim = next((s for s in reversed(self.running) if s is not seq and s not in batch.seqs), seq)
                self._preempt(victim, batch)
                if victim in decodes:
                    decodes.remove(victim)
                if victim is seq:
                    break
            else:
                self.bm.append(seq)
                batch.add(seq, 1)
                budget -= 1
        # 2. Prefills already under way, then new requests, while the token budget lasts.
        for seq in [s for s in self.running if s.num_uncomputed > 1]:
            if budget <= 0:
                break
            batch.add(seq, min(seq.num_uncomputed, budget))
            budget -= batch.num_tokens[-1]
        while self.waiting and budget > 0 and len(self.running) < self.max_batch_size:
            seq = self.waiting[0]
            if not self.bm.can_allocate(seq):
                break
            self._admit(seq)
            batch.add(seq, min(seq.num_uncomputed, budget))
            budget -= batch.num_tokens[-1]
        return batch

    def _schedule_static(self) -> Batch:
        if not self.running:
            while self.waiting and len(self.running) < self.max_batch_size:
                seq = self.waiting[0]
                reserve = seq.max_tokens - seq.num_output_tokens
                if not self.bm.can_allocate(seq, reserve):
                    break
                self._admit(seq, reserve)
        batch = Batch(padding=list(self.padding))
        for seq in self.running:   # the whole prompt at once, then one token per step
            batch.add(seq, seq.num_uncomputed)
        return batch

    def _admit(self, seq: Sequence, reserve: int = 0) -> None:
        self.waiting.popleft()
        cached = self.bm.allocate(seq, reserve)
        if seq.preemptions == 0:
            seq.cached_tokens = cached
        seq.status = Status.RUNNING
        self.running.append(seq)

    def _preempt(self, seq: Sequence, batch: Batch) -> None:
        """Recompute later: release the blocks, queue the request first in line."""
        self.running.remove(seq)
        self.bm.release(seq)
        seq.status, seq.preemptions = Status.WAITING, seq.preemptions + 1
        self.waiting.appendleft(seq)
        batch.preempted.append(seq)

    def finish(self, seq: Sequence, reason: str) -> None:
        """Leave the engine (done, or aborted): blocks back to the manager (in static mode,
        a finished row stays as padding until its batch ends)."""
        if seq in self.running:
            self.running.remove(seq)
            if self.mode == "static" and reason != "abort":
                self.padding.append(seq)
            else:
                self.bm.release(seq)
            if not self.running:   # (static) the batch is over: its padding rows go too
                for row in self.padding:
                    self.bm.release(row)
                self.padding = []
        elif seq in self.waiting:
            self.waiting.remove(seq)
        seq.status, seq.finish_reason = Status.FINISHED, reason

    def postprocess(self, batch: Batch) -> None:
        """After the forward pass: the scheduled tokens are in the cache; publish full blocks."""
        for seq, n in zip(batch.seqs, batch.num_tokens):
            seq.num_computed += n
            self.bm.publish(seq)
