"""Exercise 04b (chapter 04): pack and unpack int4 weights in the AutoAWQ "gemm" layout. Solution."""
from __future__ import annotations

import torch

AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


def pack_int4(values: torch.Tensor) -> torch.Tensor:
    rows, cols = values.shape
    v = values.to(torch.int64).reshape(rows, cols // 8, 8)
    words = torch.zeros(rows, cols // 8, dtype=torch.int64)
    for i, column in enumerate(AWQ_ORDER):
        words |= v[:, :, column] << (4 * i)
    words = torch.where(words >= 2**31, words - 2**32, words)  # unsigned 32 bits -> signed int32
    return words.to(torch.int32)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    rows, n_words = packed.shape
    words = packed.to(torch.int64) & 0xFFFFFFFF
    out = torch.zeros(rows, n_words, 8, dtype=torch.int64)
    for i, column in enumerate(AWQ_ORDER):
        out[:, :, column] = (words >> (4 * i)) & 0xF
    return out.reshape(rows, n_words * 8)
