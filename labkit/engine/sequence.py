"""A request inside the engine: its tokens, its blocks, how far its KV cache has got.

The engine never asks "is this a prefill or a decode?" of a request; it asks how many of its
tokens still lack K/V in the cache (`len(seq) - seq.num_computed`). A fresh prompt lacks all of
them (a prefill, possibly split into chunks); a running request lacks exactly one, the token it
sampled last (a decode); a request preempted by recompute lacks them all again.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from enum import Enum

import torch

from labkit.models.sampling import SamplingParams

_ids = itertools.count()


class Status(Enum):
    WAITING = "waiting"    # queued (new, or preempted and waiting to be recomputed)
    RUNNING = "running"    # holds KV blocks and takes part in steps
    FINISHED = "finished"  # done; its blocks went back to the block manager


@dataclass(eq=False)
class Sequence:
    prompt_token_ids: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    request_id: str = ""
    token_ids: list[int] = field(default_factory=list)    # prompt + output so far
    status: Status = Status.WAITING
    block_table: list[int] = field(default_factory=list)  # physical block of each logical block
    block_hashes: list[int] = field(default_factory=list)  # chain hashes of the full blocks computed so far
    num_computed: int = 0          # tokens whose K/V are in the cache
    cached_tokens: int = 0         # prompt tokens found in the prefix cache at first admission
    max_tokens: int = 0            # output budget: params.max_tokens, clipped to the model's length
    finish_reason: str | None = None
    preemptions: int = 0
    arrival_time: float = field(default_factory=time.perf_counter)
    first_token_time: float | None = None
    generator: torch.Generator | None = None

    def __post_init__(self):
        self.prompt_token_ids = list(self.prompt_token_ids)
        if not self.prompt_token_ids:
            raise ValueError("the prompt is empty: give at least one token")
        self.request_id = self.request_id or f"req-{next(_ids)}"
        self.token_ids = list(self.prompt_token_ids)
        self.max_tokens = self.max_tokens or self.params.max_tokens
        self.generator = self.params.generator()

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - len(self.prompt_token_ids)

    @property
    def num_uncomputed(self) -> int:
        """Tokens that still need a forward pass before the next token can be sampled."""
        return len(self.token_ids) - self.num_computed

    @property
    def is_finished(self) -> bool:
        return self.status is Status.FINISHED

    def num_blocks(self, block_size: int, extra_tokens: int = 0) -> int:
        """Blocks that hold all tokens so far (plus `extra_tokens` reserved ahead)."""
        return -(-(len(self.token_ids) + extra_tokens) // block_size)
