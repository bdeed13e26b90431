"""Exercise 01a (chapter 01): RMSNorm and rotary position embeddings (RoPE).

Fill in the functions below with plain torch operations (no `torch.nn.functional.rms_norm`),
then run the check in notebook 01, or:

    labkit grade ex01_rmsnorm --impl exercises/ex01_rmsnorm.py

Shapes: `x` of a norm is [..., d]; the RoPE input `x` is [B, T, H, D] (batch, tokens, heads,
head_dim) and `positions` is an integer tensor [B, T]. Return new tensors: the caller still
needs its inputs (the residual stream adds x back), so do not write into them.
"""
from __future__ import annotations

import torch


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Llama's RMSNorm: x / sqrt(mean(x^2 over the last dim) + eps) * weight.

    Unlike LayerNorm there is no mean subtraction and no bias. Compute in float32 (fp16
    squares overflow) and return the result in x's dtype, multiplied by `weight`.
    """
    raise NotImplementedError(
        "write rms_norm (RMSNorm in float32) in exercises/ex01_rmsnorm.py; "
        "notebook 01, section 'Exercise 01a: RMSNorm and RoPE', explains it")


def rope_inv_freq(head_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """The D/2 rotation speeds of RoPE: theta ** (-2i / D) for i = 0 .. D/2 - 1 (float32)."""
    raise NotImplementedError(
        "write rope_inv_freq (the D/2 rotation speeds of RoPE) in exercises/ex01_rmsnorm.py; "
        "notebook 01, section 'Exercise 01a: RMSNorm and RoPE', explains it")


def apply_rope(x: torch.Tensor, positions: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """Rotate x [B, T, H, D] by angles position * inv_freq, Llama's (Hugging Face) way.

    The pairs rotated together are (i, i + D/2), not neighbours (2i, 2i + 1): split x into
    halves x1, x2 and return (x1 cos - x2 sin, x2 cos + x1 sin) concatenated, with the same
    angle for the two members of a pair and for every head.
    """
    raise NotImplementedError(
        "write apply_rope (the rotation of the (i, i + D/2) pairs) in exercises/ex01_rmsnorm.py; "
        "notebook 01, section 'Exercise 01a: RMSNorm and RoPE', explains it")
