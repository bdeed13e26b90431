"""Solution to exercise 01a: RMSNorm and RoPE."""
from __future__ import annotations

import torch


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    h = x.float()
    h = h / torch.sqrt(h.pow(2).mean(dim=-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def rope_inv_freq(head_dim: int, theta: float = 10000.0) -> torch.Tensor:
    i = torch.arange(0, head_dim, 2, dtype=torch.float64)
    return (1.0 / theta ** (i / head_dim)).float()


def apply_rope(x: torch.Tensor, positions: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    angles = positions[..., None].float() * rope_inv_freq(x.shape[-1], theta).to(x.device)  # [B, T, D/2]
    cos, sin = angles.cos()[:, :, None, :], angles.sin()[:, :, None, :]                        # one per head
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    return out.to(x.dtype)
