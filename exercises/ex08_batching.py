"""Exercise 08 (chapter 08): one step of a continuous-batching scheduler.

Then run the checks in notebook 08, or:

    labkit grade ex08_batching --impl exercises/ex08_batching.py

Static batching runs a batch until its longest request is done. Continuous batching rebuilds
the batch at every step: requests join as soon as there is room and leave as soon as they
finish. Your function plans one step, the way labkit.engine.scheduler does (simplified:
here a request takes the blocks of its whole prompt when it is admitted, and decoding needs
no new blocks; the engine also grows blocks and preempts when they run out).

A step has a *token budget* (how many tokens one forward pass may process). Spend it in
this order:

1. Decodes first: every running request whose prompt is done runs 1 token, so requests
   that are already answering are never stalled by a newcomer's long prompt.
2. Then running requests still in their prompt continue it: min(tokens left, budget) each,
   in order (chunked prefill: a long prompt is processed over several steps).
3. Then waiting requests join, first come first served, while fewer than `max_batch` run,
   budget is left, and the blocks for the whole prompt (ceil(prompt_len / block_size)) are
   free. The first request that does not fit stops admission (no overtaking). A joining
   request takes its blocks, moves from `waiting` to the end of `running`, and runs
   min(prompt_len, budget) tokens.
"""
from __future__ import annotations


class Request:
    """A request as the scheduler sees it (filled in by the caller; nothing to write here)."""

    def __init__(self, name: str, prompt_len: int, max_tokens: int, computed: int = 0, generated: int = 0,
                 blocks: int = 0):
        self.name = name
        self.prompt_len = prompt_len    # tokens in the prompt
        self.max_tokens = max_tokens    # tokens to generate
        self.computed = computed        # tokens whose K/V are in the cache (the prompt first, then outputs)
        self.generated = generated      # output tokens so far
        self.blocks = blocks            # KV-cache blocks held

    def __repr__(self) -> str:
        return f"Request({self.name!r}, prompt {self.prompt_len}, computed {self.computed}, blocks {self.blocks})"

    @property
    def in_prefill(self) -> bool:
        return self.computed < self.prompt_len


def schedule_step(running: list[Request], waiting: list[Request], free_blocks: int, block_size: int,
                  max_batch: int, token_budget: int) -> tuple[list[tuple[str, int]], int]:
    """Plan one step: returns ([(request name, tokens to run)], free blocks left).

    Admission changes `running`, `waiting` and the joining requests' `blocks` in place;
    `computed` and `generated` are left alone (the engine updates them after the step).
    """
    raise NotImplementedError(
        "write schedule_step (plan one scheduler step) in exercises/ex08_batching.py; "
        "notebook 08, section '3 · Exercise 08: one step of continuous batching', explains it")
