"""Exercise 02c (chapter 02): block influence, and which layers to drop. Reference answer."""
from __future__ import annotations

import torch


def block_influence(x_in: torch.Tensor, x_out: torch.Tensor) -> float:
    """1 - mean over tokens of cos(x_in[t], x_out[t]), each cosine over the hidden dimension."""
    a = x_in.reshape(-1, x_in.shape[-1]).double()       # [tokens, hidden]
    b = x_out.reshape(-1, x_out.shape[-1]).double()
    cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))
    return float(1 - cos.mean())


def layers_to_drop(influence: list[float], n: int) -> list[int]:
    """The indices of the n layers of lowest influence, in increasing index order (where
    influences tie, the later layer is dropped first). Raise ValueError unless 0 <= n < len(influence)."""
    if not 0 <= n < len(influence):
        raise ValueError(f"cannot drop {n} of {len(influence)} layers")
    order = sorted(range(len(influence)), key=lambda i: (influence[i], -i))
    return sorted(order[:n])
