"""Choosing the next token: greedy, temperature, top-k, top-p, repetition penalty, seeds.

The same functions serve the simple generator and the engine, so a request sampled with the
same seed gives the same tokens in both.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class SamplingParams:
    """How to pick tokens. temperature 0 means greedy (argmax)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0               # 0: no limit
    repetition_penalty: float = 1.0
    max_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    ignore_eos: bool = False

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if isinstance(self.stop, str):
            self.stop = [self.stop]

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def generator(self) -> torch.Generator | None:
        """A CPU generator seeded for this request (None: the global RNG)."""
        if self.seed is None:
            return None
        return torch.Generator().manual_seed(self.seed)


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's penalty: make tokens already seen less likely (divide positive logits, multiply negative)."""
    if penalty == 1.0 or seen.numel() == 0:
        return logits
    picked = logits.gather(-1, seen)
    return logits.scatter(-1, seen, torch.where(picked > 0, picked / penalty, picked * penalty))


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits, set the rest to -inf."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus sampling: keep the smallest set of tokens whose probability sums to >= p."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True)
    probs = sorted_logits.softmax(-1)
    before = probs.cumsum(-1) - probs        # mass of the tokens ranked above each one
    drop = before >= p                       # the top token always survives
    return logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))


def sample_next(logits: torch.Tensor, params: SamplingParams, seen: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> int:
    """One token id from a logits row [V], given the ids seen so far (prompt + output).

    A sampled token is the first whose cumulative probability exceeds one uniform number u
    (inverse transform sampling): one random number per token. `torch.multinomial` draws one
    per vocabulary entry instead (49k exponentials for the embedded model), which on a host
    costs an order of magnitude more than the rest of the sampling, row after row."""
    logits = logits.float()
    if seen is not None:
        logits = apply_repetition_penalty(logits, seen.to(logits.device), params.repetition_penalty)
    if params.greedy:
        return int(logits.argmax())
    logits = top_p_filter(top_k_filter(logits / params.temperature, params.top_k), params.top_p)
    probs = logits.softmax(-1).cpu()
    cdf = probs.cumsum(-1)
    token = int(torch.searchsorted(cdf, torch.rand((), generator=generator) * cdf[-1], right=True))
    return token if token < len(cdf) else int(probs.argmax())   # u * total rounded up to the total
