"""Simple generation: one prompt (or a batch of equal-length prompts), a contiguous KV cache.

This is the reference the engine is tested against: easy to read, one step at a time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from labkit.models.llama import KVCache, Llama
from labkit.models.sampling import SamplingParams, sample_next
from labkit.models.tokenizer import StreamDecoder, Tokenizer


@dataclass
class Generation:
    text: str
    token_ids: list[int]
    finish_reason: str   # "stop" (EOS or a stop string) or "length"
    prompt_tokens: int


@torch.inference_mode()
def generate_ids(model: Llama, prompt_ids: list[int], params: SamplingParams,
                 eos_ids: set[int] = frozenset(), use_cache: bool = True) -> Iterator[int]:
    """Yield generated token ids one by one (EOS is yielded last if reached).

    With `use_cache=False` every step re-runs the whole sequence: the slow way, kept to
    measure what the KV cache saves.
    """
    device = model.model.embed_tokens.weight.device
    dtype = model.model.embed_tokens.weight.dtype
    cache = KVCache(model.config, 1, len(prompt_ids) + params.max_tokens, dtype, device) if use_cache else None
    ids = list(prompt_ids)
    step_input = torch.tensor([ids], device=device)
    generator = params.generator()
    for _ in range(params.max_tokens):
        logits = model(step_input, cache=cache, last_only=True)[0, -1]
        seen = torch.tensor(ids) if params.repetition_penalty != 1.0 else None
        token = sample_next(logits, params, seen, generator)
        ids.append(token)
        yield token
        if token in eos_ids and not params.ignore_eos:
            return
        step_input = torch.tensor([[token]] if use_cache else [ids], device=device)


def stream(model: Llama, tokenizer: Tokenizer, prompt_ids: list[int], params: SamplingParams) -> Iterator[str]:
    """Yield text pieces as tokens arrive, stopping at EOS or a stop string."""
    decoder = StreamDecoder(tokenizer, params.stop)
    for token in generate_ids(model, prompt_ids, params, _eos(model, tokenizer)):
        piece = decoder.push(token)
        if piece:
            yield piece
        if decoder.stopped:
            return
    rest = decoder.finish()
    if rest:
        yield rest


def generate(model: Llama, tokenizer: Tokenizer, prompt: str | list[int], params: SamplingParams | None = None) -> Generation:
    """Generate a completion for a prompt (text or token ids)."""
    params = params or SamplingParams()
    prompt_ids = tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
    eos = _eos(model, tokenizer)
    decoder = StreamDecoder(tokenizer, params.stop)
    out: list[int] = []
    finish = "length"
    for token in generate_ids(model, prompt_ids, params, eos):
        out.append(token)
        decoder.push(token)
        if decoder.stopped or (token in eos and not params.ignore_eos):
            finish = "stop"
            break
    decoder.finish()
    return Generation(decoder.text, out, finish, len(prompt_ids))


def _eos(model: Llama, tokenizer: Tokenizer) -> set[int]:
    return set(model.config.eos_ids) | tokenizer.eos_token_ids
