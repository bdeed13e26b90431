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


def top_k_filter(logits: torch.Tensor, k: int | torch.Tensor) -> torch.Tensor:
    """Keep the k largest logits, set the rest to -inf. `k` is an int, or one per row as an
    integer tensor [..., 1]; k <= 0 or k >= V keeps every token."""
    vocab = logits.shape[-1]
    if isinstance(k, int):
        if k <= 0 or k >= vocab:
            return logits
        kth = torch.topk(logits, k).values[..., -1:]
    else:
        k = torch.where((k <= 0) | (k > vocab), vocab, k)
        kth = torch.topk(logits, int(k.max())).values.gather(-1, k - 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float | torch.Tensor) -> torch.Tensor:
    """Nucleus sampling: keep the smallest set of tokens whose probability sums to >= p. `p`
    is a float, or one per row as a tensor [..., 1] (p >= 1 keeps every token)."""
    if not isinstance(p, torch.Tensor):
        if p >= 1.0:
            return logits
    else:   # a cumulative sum can round past 1.0: keep the rows with p >= 1 whole
        p = torch.where(p >= 1.0, float("inf"), p)
    sorted_logits, order = torch.sort(logits, descending=True)
    probs = sorted_logits.softmax(-1)
    before = probs.cumsum(-1) - probs        # mass of the tokens ranked above each one
    drop = before >= p                       # the top token always survives
    return logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))


def sample_rows(logits: torch.Tensor, params: list[SamplingParams], seen: list[torch.Tensor | None] | None = None,
                generators: list[torch.Generator | None] | None = None) -> list[int]:
    """One token id per row of logits [B, V]: row i with params[i], the ids it has seen
    (prompt + output, for the repetition penalty) and its generator.

    All rows at once, on the logits' device: one filter pass for the sampled rows and one
    transfer of the B tokens at the end (on a GPU one synchronization a step, not one a row).
    A sampled token is the first whose cumulative probability exceeds one uniform number u
    (inverse transform sampling), u drawn from the row's own generator: a seeded request
    picks the same tokens whatever else shares its step. `torch.multinomial` would draw one
    random number per vocabulary entry (49k for the embedded model) instead of one per row."""
    rows, vocab = logits.shape
    seen = seen or [None] * rows
    generators = generators or [None] * rows
    logits = logits.float()
    penalized = [i for i in range(rows) if seen[i] is not None and params[i].repetition_penalty != 1.0]
    if penalized:
        logits = logits.clone()
        for i in penalized:
            logits[i] = apply_repetition_penalty(logits[i], seen[i].to(logits.device), params[i].repetition_penalty)
    sampled = [i for i in range(rows) if not params[i].greedy]
    if len(sampled) < rows:
        tokens = logits.argmax(-1)
    else:
        tokens = torch.empty(rows, dtype=torch.long, device=logits.device)
    if sampled:
        def per_row(values: list, dtype: torch.dtype) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype)[:, None].to(logits.device)

        x = logits[sampled] / per_row([params[i].temperature for i in sampled], torch.float32)
        top_k = [params[i].top_k for i in sampled]
        if any(0 < k < vocab for k in top_k):
            x = top_k_filter(x, per_row(top_k, torch.int64))
        top_p = [params[i].top_p for i in sampled]
        if min(top_p) < 1.0:
            x = top_p_filter(x, per_row(top_p, torch.float32))
        cdf = x.softmax(-1).cumsum(-1)
        u = torch.stack([torch.rand((), generator=generators[i]) for i in sampled]).to(logits.device)
        picked = torch.searchsorted(cdf, (u[:, None] * cdf[:, -1:]).contiguous(), right=True)[:, 0]
        last = torch.searchsorted(cdf, cdf[:, -1:].contiguous())[:, 0]   # the last token with any probability
        picked = torch.minimum(picked, last)                             # (if u * total rounded up to the total)
        tokens[sampled] = picked
    return tokens.tolist()


def sample_next(logits: torch.Tensor, params: SamplingParams, seen: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> int:
    """One token id from a logits row [V], given the ids seen so far (prompt + output): the
    one-row case of `sample_rows`."""
    return sample_rows(logits[None], [params], [seen], [generator])[0]
