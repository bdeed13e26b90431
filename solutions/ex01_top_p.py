"""Solution to exercise 01b: temperature, top-k and top-p."""
from __future__ import annotations

import torch


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_above = probs.cumsum(dim=-1) - probs          # exclusive cumulative sum
    sorted_logits = sorted_logits.masked_fill(mass_above >= p, float("-inf"))
    return torch.empty_like(logits).scatter(-1, order, sorted_logits)


def sampling_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    logits = apply_temperature(logits.float(), temperature)
    return top_p_filter(top_k_filter(logits, top_k), top_p).softmax(dim=-1)
