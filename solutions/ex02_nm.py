"""Exercise 02b (chapter 02): an N:M mask. Reference answer."""
from __future__ import annotations

import torch


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """A bool mask [out, in], True where a weight is kept: the n highest scores of every group
    of m consecutive inputs in each row (where scores tie, the lower column index is removed
    first). Raise ValueError if m does not divide `in`, or unless 0 < n < m."""
    rows, cols = scores.shape
    if not 0 < n < m:
        raise ValueError(f"{n}:{m} needs 0 < n < m")
    if cols % m:
        raise ValueError(f"m = {m} does not divide the input dimension {cols}")
    groups = scores.reshape(rows, cols // m, m)                       # [out, groups, m]
    lowest = torch.sort(groups, dim=-1, stable=True).indices[..., : m - n]
    keep = torch.ones_like(groups, dtype=torch.bool)
    keep.scatter_(-1, lowest, False)
    return keep.reshape(rows, cols)
