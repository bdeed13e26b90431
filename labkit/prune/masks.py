"""Which weights to remove: importance scores, and masks that keep the important ones.

A mask is a bool tensor shaped like the weight [out, in], True where the weight is kept.

- magnitude: score |W|, and the smallest scores across the whole layer go. Cheap, needs no
  data, and blind to the inputs: a small weight on a channel that carries huge activations
  matters more than a large one on a quiet channel.
- Wanda (Sun et al. 2023): score |W_ij| * ||X_j||_2, the weight times the L2 norm of its
  input channel over the calibration tokens, compared within each output row. Per row,
  because each output is a sum over its own row: removing the same fraction from every
  output keeps every output's error in proportion, where a layer-wide threshold can empty
  some rows.
- N:M (e.g. 2:4): keep the N highest scores in every group of M consecutive weights along
  the input dimension of each row, the pattern sparse tensor cores (NVIDIA Ampere and
  later) multiply at up to twice the dense rate.

Ties are broken by position (the earlier weight goes first), so masks are deterministic.
"""
from __future__ import annotations

import torch


def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    return weight.abs().float()


def wanda_scores(weight: torch.Tensor, input_norm: torch.Tensor) -> torch.Tensor:
    """|W_ij| * ||X_j||_2 for input channel norms [in] over the calibration tokens."""
    return weight.abs().float() * input_norm.float()[None, :]


def input_norms(x: torch.Tensor) -> torch.Tensor:
    """||X_j||_2 over every token of inputs [..., in] -> [in]."""
    return x.reshape(-1, x.shape[-1]).float().norm(dim=0)


def check_sparsity(sparsity: float) -> None:
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity {sparsity} is outside [0, 1)")


def _keep_largest(scores: torch.Tensor, n_prune: int) -> torch.Tensor:
    """Along the last dim, False for the n_prune lowest scores (earlier index first on ties)."""
    mask = torch.ones_like(scores, dtype=torch.bool)
    if n_prune == 0:
        return mask
    # a stable sort puts equal scores in index order, so the earlier one is pruned first
    order = torch.sort(scores, dim=-1, stable=True).indices[..., :n_prune]
    return mask.scatter(-1, order, False)


def unstructured_mask(scores: torch.Tensor, sparsity: float, per_row: bool = True) -> torch.Tensor:
    """Prune `round(sparsity * n)` of each row's n scores (per_row) or of the whole matrix's."""
    check_sparsity(sparsity)
    flat = scores if per_row else scores.reshape(1, -1)
    return _keep_largest(flat, round(sparsity * flat.shape[-1])).view_as(scores)


def parse_pattern(pattern: str) -> tuple[int, int]:
    """'2:4' -> (2, 4): keep N of every M."""
    try:
        n, m = (int(p) for p in pattern.split(":"))
    except ValueError:
        raise ValueError(f"pattern {pattern!r} is not N:M (for example 2:4)") from None
    if not 0 < n < m:
        raise ValueError(f"pattern {pattern!r} needs 0 < N < M")
    return n, m


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the n highest scores in every group of m consecutive inputs of each row."""
    out_features, in_features = scores.shape
    if in_features % m:
        raise ValueError(f"the N:M group size {m} does not divide the input dimension {in_features}")
    groups = scores.reshape(out_features, in_features // m, m)
    return _keep_largest(groups, m - n).reshape(out_features, in_features)


def sparsity_of(weight: torch.Tensor) -> float:
    """The fraction of exact zeros."""
    return float((weight == 0).sum()) / weight.numel()
