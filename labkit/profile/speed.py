"""Measured speed of a model on this machine: prefill and decode tokens per second.

Prefill (the prompt, all tokens at once) and decode (one token per step) run the same
weights but behave completely differently: prefill multiplies each weight by many tokens
(compute-bound), decode by one (memory-bound). These helpers time both on any `Llama`, with
random token ids (speed does not depend on which tokens), so a notebook cell stays one line.
"""
from __future__ import annotations

import time

import torch

from labkit.models.generate import generate_ids
from labkit.models.llama import KVCache, Llama
from labkit.models.sampling import SamplingParams
from labkit.profile.timing import Timer, measure, synchronize


def _device_dtype(model: Llama) -> tuple[torch.device, torch.dtype]:
    w = model.model.embed_tokens.weight
    return w.device, w.dtype


def _ids(model: Llama, batch: int, tokens: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (batch, tokens), generator=g)
    return ids.to(_device_dtype(model)[0])


@torch.inference_mode()
def prefill_speed(model: Llama, tokens: int = 256, batch: int = 1, repeats: int = 3) -> float:
    """Prompt tokens per second of one forward pass over `batch` x `tokens` tokens."""
    ids = _ids(model, batch, tokens)
    return batch * tokens / measure(lambda: model(ids, last_only=True), repeats=repeats, warmup=1)


@torch.inference_mode()
def decode_step_seconds(model: Llama, context: int = 128, steps: int = 16, batch: int = 1,
                        use_cache: bool = True) -> list[float]:
    """Seconds of each of `steps` decode steps after a prompt of `context` tokens.

    With the cache a step feeds one new token per sequence; without it, the whole sequence
    so far is run again (what `generate_ids(..., use_cache=False)` does).
    """
    device, dtype = _device_dtype(model)
    ids = _ids(model, batch, context + steps + 1, seed=1)
    cache = KVCache(model.config, batch, context + steps + 1, dtype, device) if use_cache else None
    model(ids[:, :context], cache=cache, last_only=True)
    times = []
    for i in range(context, context + steps):
        step = ids[:, i:i + 1] if use_cache else ids[:, :i + 1]
        with Timer() as t:
            model(step, cache=cache, last_only=True)
        times.append(t.seconds)
    return times


def decode_speed(model: Llama, context: int = 128, steps: int = 16, batch: int = 1, use_cache: bool = True) -> float:
    """Generated tokens per second (all sequences of the batch) at about `context` tokens,
    from the median step time."""
    times = sorted(decode_step_seconds(model, context, steps, batch, use_cache))
    return batch / times[len(times) // 2]


def generation_timeline(model: Llama, prompt_ids: list[int], max_tokens: int = 32,
                        use_cache: bool = True) -> tuple[list[int], list[float]]:
    """(token ids, seconds from the start until each arrived), greedy, with `generate_ids`.

    The first time is the time to first token (it includes the prompt's prefill).
    """
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    tokens, arrivals = [], []
    synchronize()
    start = time.perf_counter()
    for token in generate_ids(model, prompt_ids, params, use_cache=use_cache):
        arrivals.append(time.perf_counter() - start)  # the id is already a Python int: the GPU is done
        tokens.append(token)
    return tokens, arrivals


def tokens_per_second(timeline: list[float]) -> float:
    """Decode rate of a `generation_timeline`: tokens after the first over the time they took."""
    if len(timeline) < 2:
        return float("nan")
    return (len(timeline) - 1) / (timeline[-1] - timeline[0])
