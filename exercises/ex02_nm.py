"""Exercise 02b (chapter 02): an N:M mask.

Fill in the function with plain torch operations, then run the check in notebook 02, or:

    labkit grade ex02_nm --impl exercises/ex02_nm.py

N:M sparsity keeps N weights in every group of M consecutive weights along the *input*
dimension of each row: for a weight [out, in], row i's groups are
w[i, 0:M], w[i, M:2M], ... This is the pattern sparse tensor cores multiply (2:4 on NVIDIA
GPUs since Ampere). The function must not modify its input.
"""
from __future__ import annotations

import torch


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """A bool mask [out, in], True where a weight is kept: the n highest scores of every group
    of m consecutive inputs in each row (where scores tie, the lower column index is removed
    first). Raise ValueError if m does not divide `in`, or unless 0 < n < m."""
    raise NotImplementedError(
        "write nm_mask (keep the n highest of every m consecutive inputs of a row) in exercises/ex02_nm.py; "
        "notebook 02, section 'Exercise 02b: an N:M mask', explains it")
