"""Exercise 05 (chapter 05): AWQ's scale search for one linear layer. Solution."""
from __future__ import annotations

import torch

from labkit.quant.rtn import fake_quantize


def awq_scales(act_mean: torch.Tensor, alpha: float) -> torch.Tensor:
    s = act_mean.clamp(min=1e-4) ** alpha
    return s / torch.sqrt(s.max() * s.min())


def search_scale(w: torch.Tensor, x: torch.Tensor, bits: int = 4, group_size: int = 32,
                 n_grid: int = 20) -> tuple[float, torch.Tensor, list[float]]:
    act_mean = x.abs().mean(dim=0)
    reference = x @ w.T
    losses = []
    best_alpha, best_scales = 0.0, torch.ones_like(act_mean)
    for i in range(n_grid):
        alpha = i / n_grid
        s = awq_scales(act_mean, alpha)
        w_q = fake_quantize(w * s, bits, group_size) / s
        loss = (x @ w_q.T - reference).pow(2).mean().item()
        if not losses or loss < min(losses):
            best_alpha, best_scales = alpha, s
        losses.append(loss)
    return best_alpha, best_scales, losses
