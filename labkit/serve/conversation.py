"""One chat turn on the engine: the prompt from a conversation, the streamed reply, its figures.

Both chat front ends (the Gradio page and `labkit chat --cli`) go through `stream_reply`, so
there is one generation path, the engine's. The whole conversation is re-sent every turn
(as an OpenAI client would); the engine's prefix cache recognises the part it has already
computed, and `TurnStats.cached_tokens` shows how much of the prompt that was.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import AsyncIterator

from labkit.errors import UserError
from labkit.models.sampling import SamplingParams


@dataclass
class TurnStats:
    """What one reply cost: the figures of the chat page's live panel."""

    prompt_tokens: int = 0
    cached_tokens: int = 0          # prompt tokens whose K/V came from the prefix cache
    completion_tokens: int = 0
    ttft_s: float | None = None     # request sent -> first token out
    decode_tok_s: float | None = None  # tokens after the first / time after the first
    finish_reason: str | None = None
    dropped_turns: int = 0          # oldest turns left out to fit the context

    def update(self, delta, started: float, now: float) -> None:
        self.prompt_tokens = delta.prompt_tokens or self.prompt_tokens
        self.cached_tokens = delta.cached_tokens or 0
        self.completion_tokens = delta.completion_tokens
        if self.ttft_s is None and delta.completion_tokens:
            self.ttft_s = now - started
        if self.ttft_s is not None and self.completion_tokens > 1 and now - started > self.ttft_s:
            self.decode_tok_s = (self.completion_tokens - 1) / (now - started - self.ttft_s)
        if delta.finished:
            self.finish_reason = delta.finish_reason


def messages_for(history: list[dict], system: str | None) -> list[dict]:
    """The messages sent to the template: the system prompt (if any), then the turns."""
    turns = [{"role": m["role"], "content": m["content"]} for m in history]
    return ([{"role": "system", "content": system}] if system and system.strip() else []) + turns


def fit_prompt(tokenizer, history: list[dict], system: str | None, max_model_len: int,
               max_tokens: int) -> tuple[list[int], int, int]:
    """(prompt ids, max_tokens that fit, turns dropped): the newest turns that fit the context.

    The oldest user/assistant pairs go first; the latest message always stays. If even it
    leaves no room to answer, that is the user's to fix (a shorter message).
    """
    dropped = 0
    while True:
        ids = tokenizer.encode_chat(messages_for(history[2 * dropped:], system))
        if len(ids) + max_tokens <= max_model_len or len(history) - 2 * dropped <= 1:
            break
        dropped += 1
    room = max_model_len - len(ids)
    if room < 1:
        raise UserError(f"the message is too long: {len(ids)} tokens, the context holds {max_model_len}")
    return ids, min(max_tokens, room), dropped


async def stream_reply(llm, history: list[dict], system: str | None, params: SamplingParams
                       ) -> AsyncIterator[tuple[str, TurnStats]]:
    """Yield (new text, figures so far) while the engine answers the last user message.

    Closing this generator (a stop button, Ctrl-C, a cancelled task) closes the engine
    stream, which aborts the sequence and frees its KV blocks.
    """
    ids, max_tokens, dropped = fit_prompt(llm.tokenizer, history, system, llm.max_model_len, params.max_tokens)
    params = replace(params, max_tokens=max_tokens)
    stats = TurnStats(prompt_tokens=len(ids), dropped_turns=dropped)
    started = time.perf_counter()
    stream = llm.stream(ids, params)
    try:
        async for delta in stream:
            stats.update(delta, started, time.perf_counter())
            yield delta.text, stats
    finally:
        await stream.aclose()
