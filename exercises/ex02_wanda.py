"""Exercise 02a (chapter 02): the Wanda score and its per-row mask.

Fill in the two functions with plain torch operations, then run the check in notebook 02, or:

    labkit grade ex02_wanda --impl exercises/ex02_wanda.py

A linear layer's weight `w` is [out, in]; its calibration inputs `x` are [..., in] (any number
of leading dimensions: batch, tokens). Wanda scores weight (i, j) by |w_ij| times the L2 norm
of input channel j over every calibration token, and removes the lowest scores of each output
row. Neither function may modify its inputs.
"""
from __future__ import annotations

import torch


def wanda_scores(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Scores [out, in] (float32): |w_ij| * ||x_j||_2, the norm over every token (all leading dims of x)."""
    raise NotImplementedError(
        "write wanda_scores (|W| times the L2 norm of each input channel over all tokens) in exercises/ex02_wanda.py; "
        "notebook 02, section 'Exercise 02a: the Wanda score and its per-row mask', explains it")


def wanda_mask(w: torch.Tensor, x: torch.Tensor, sparsity: float) -> torch.Tensor:
    """A bool mask [out, in], True where a weight is kept: in every row, the round(sparsity * in)
    lowest Wanda scores are removed (where scores tie, the lower column index is removed first).
    Raise ValueError if sparsity is outside [0, 1)."""
    raise NotImplementedError(
        "write wanda_mask (remove the lowest scores within each output row) in exercises/ex02_wanda.py; "
        "notebook 02, section 'Exercise 02a: the Wanda score and its per-row mask', explains it")
