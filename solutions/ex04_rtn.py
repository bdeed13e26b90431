"""Exercise 04a (chapter 04): asymmetric group-wise round-to-nearest quantization. Solution."""
from __future__ import annotations

import torch


def quantize_groupwise(w: torch.Tensor, bits: int, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n, k = w.shape
    if k % group_size:
        raise ValueError(f"group size {group_size} does not divide K = {k}")
    qmax = 2**bits - 1
    groups = w.float().reshape(n, k // group_size, group_size)        # [N, groups, g]
    lo, hi = groups.amin(dim=-1), groups.amax(dim=-1)                 # [N, groups]
    scale = ((hi - lo) / qmax).clamp(min=1e-8)
    zero = torch.round(-lo / scale).clamp(0, qmax)
    q = torch.clamp(torch.round(groups / scale[..., None]) + zero[..., None], 0, qmax)
    return q.reshape(n, k), scale, zero


def dequantize_groupwise(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int) -> torch.Tensor:
    n, k = q.shape
    groups = q.float().reshape(n, k // group_size, group_size)
    return ((groups - zero[..., None]) * scale[..., None]).reshape(n, k)
