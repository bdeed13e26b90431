"""Exercise 02a (chapter 02): the Wanda score and its per-row mask. Reference answer."""
from __future__ import annotations

import torch


def wanda_scores(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Scores [out, in] (float32): |w_ij| * ||x_j||_2, the norm over every token (all leading dims of x)."""
    tokens = x.reshape(-1, x.shape[-1]).float()          # [tokens, in]
    norms = tokens.pow(2).sum(dim=0).sqrt()               # one L2 norm per input channel
    return w.abs().float() * norms[None, :]


def wanda_mask(w: torch.Tensor, x: torch.Tensor, sparsity: float) -> torch.Tensor:
    """A bool mask [out, in], True where a weight is kept: in every row, the round(sparsity * in)
    lowest Wanda scores are removed (where scores tie, the lower column index is removed first).
    Raise ValueError if sparsity is outside [0, 1)."""
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity {sparsity} is outside [0, 1)")
    scores = wanda_scores(w, x)
    n_remove = round(sparsity * w.shape[1])
    lowest = torch.sort(scores, dim=1, stable=True).indices[:, :n_remove]   # per row, ties in index order
    keep = torch.ones_like(scores, dtype=torch.bool)
    keep.scatter_(1, lowest, False)
    return keep
