"""Exercise 04a (chapter 04): asymmetric group-wise round-to-nearest quantization.

Fill in the two functions with plain torch operations, then run the check in notebook 04, or:

    labkit grade ex04_rtn --impl exercises/ex04_rtn.py

A weight `w` is [N, K] (out_features, in_features). A group is `group_size` *consecutive
input channels* of one output row: row n, group j covers w[n, j*g : (j+1)*g]. Each group has
its own scale and zero point, so `scale` and `zero` are [N, K // g] (one row per output
channel, like w itself; not transposed). Neither function may modify its inputs.
"""
from __future__ import annotations

import torch


def quantize_groupwise(w: torch.Tensor, bits: int, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric RTN of w [N, K] -> (q, scale, zero).

    Per group, with qmax = 2**bits - 1 and lo, hi = the group's min and max:

        scale = (hi - lo) / qmax              (use at least 1e-8, a constant group has hi == lo)
        zero  = round(-lo / scale), clamped to [0, qmax]
        q     = clamp(round(w / scale) + zero, 0, qmax)

    Returns q [N, K] (any integer or float dtype holding whole numbers), scale and zero [N, K // g]
    (float). Raise ValueError if group_size does not divide K.
    """
    raise NotImplementedError(
        "write quantize_groupwise (asymmetric RTN per group of input channels) in exercises/ex04_rtn.py; "
        "notebook 04, section 'Exercise 04a: asymmetric group-wise quantization', explains it")


def dequantize_groupwise(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int) -> torch.Tensor:
    """Back to float32 weights [N, K]: w = (q - zero) * scale, each group with its own scale and zero."""
    raise NotImplementedError(
        "write dequantize_groupwise ((q - zero) * scale per group) in exercises/ex04_rtn.py; "
        "notebook 04, section 'Exercise 04a: asymmetric group-wise quantization', explains it")
