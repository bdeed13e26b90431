"""Round-to-nearest (RTN) weight quantization: the baseline every other method is measured by.

A weight matrix `W [N, K]` (out, in) is cut into groups of `g` consecutive input channels per
output row; each group gets its own scale (and, if asymmetric, zero point):

    asymmetric: s = (max - min) / (2^b - 1),  z = round(-min / s),  q = clamp(round(w / s) + z, 0, 2^b - 1)
    symmetric:  s = max|w| / (2^(b-1) - 1),                          q = clamp(round(w / s), -2^(b-1), 2^(b-1) - 1)
    back:       w ~ (q - z) * s                                      (z = 0 when symmetric)

Smaller groups follow the weights more closely (lower error) but store more scales. The
granularity is chosen with `group_size`: a positive `g` (per-group), `PER_CHANNEL` (one group
per output row, `g = K`) or `PER_TENSOR` (one scale for the whole matrix).

Asymmetric codes are unsigned (`0 .. 2^b - 1`, what the int4 packing stores); symmetric
codes are signed. Errors a caller can make (a group size that does not divide `K`, an odd
bit width) raise `ValueError` with the numbers in the message.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

PER_CHANNEL = -1
"""`group_size` for one group per output channel (a whole row of W)."""

PER_TENSOR = 0
"""`group_size` for a single scale for the whole tensor."""

SUPPORTED_BITS = (2, 3, 4, 8)


@dataclass
class Quantized:
    """Integer codes and what turns them back into weights.

    q: [N, K] codes (int16; unsigned when asymmetric); scale, zero: [N, K // g] (zero is None
    when symmetric). Per-tensor quantization stores a [1, 1] scale.
    """

    q: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor | None
    bits: int
    group_size: int

    def dequantize(self) -> torch.Tensor:
        return dequantize(self)


def group_width(k: int, group_size: int) -> int:
    """The number of input channels one scale covers, checking that it divides `k`."""
    if group_size in (PER_CHANNEL, PER_TENSOR):
        return k
    if group_size < 1 or k % group_size:
        raise ValueError(f"group size {group_size} does not divide the input dimension {k} "
                         f"(choose a divisor of {k}, or -1 for per-channel)")
    return group_size


def quantize(w: torch.Tensor, bits: int = 4, group_size: int = 128, sym: bool = False,
             scale_dtype: torch.dtype | None = None) -> Quantized:
    """RTN-quantize a 2-D weight `[N, K]`.

    `scale_dtype` (e.g. float16, what checkpoints store) rounds the scales to that dtype
    *before* the codes are computed, so that dequantizing the stored scales gives exactly
    the weights the codes were chosen for.
    """
    if w.dim() != 2:
        raise ValueError(f"quantize wants a 2-D weight [out, in], got shape {tuple(w.shape)}")
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"{bits}-bit quantization is not supported (bits: {SUPPORTED_BITS})")
    n, k = w.shape
    g = group_width(k, group_size)
    shape = (1, 1, n * k) if group_size == PER_TENSOR else (n, k // g, g)
    x = w.detach().float().reshape(shape)                           # [rows, groups, g]
    if sym:
        qmax = 2 ** (bits - 1) - 1
        scale = (x.abs().amax(-1) / qmax).clamp(min=1e-8)
        zero = None
    else:
        qmax = 2 ** bits - 1
        lo, hi = x.amin(-1).clamp(max=0), x.amax(-1).clamp(min=0)  # the grid always holds 0
        scale = ((hi - lo) / qmax).clamp(min=1e-8)
    if scale_dtype is not None:
        scale = scale.to(scale_dtype).float().clamp(min=torch.finfo(scale_dtype).tiny)
    if sym:
        q = torch.round(x / scale[..., None]).clamp(-qmax - 1, qmax)
    else:
        zero = torch.round(-lo / scale).clamp(0, qmax)
        q = (torch.round(x / scale[..., None]) + zero[..., None]).clamp(0, qmax)
    q = q.reshape(n, k).to(torch.int16)
    return Quantized(q, scale, zero, bits, group_size)


def dequantize(qw: Quantized) -> torch.Tensor:
    """Float32 weights `(q - z) * s` of the same shape as the original."""
    n, k = qw.q.shape
    x = qw.q.float().reshape(*qw.scale.shape, -1)
    if qw.zero is not None:
        x = x - qw.zero[..., None]
    return (x * qw.scale[..., None]).reshape(n, k)


def fake_quantize(w: torch.Tensor, bits: int = 4, group_size: int = 128, sym: bool = False) -> torch.Tensor:
    """Quantize and dequantize (same dtype as `w`): what the model computes with afterwards."""
    return dequantize(quantize(w, bits, group_size, sym)).to(w.dtype)


def quantization_error(w: torch.Tensor, bits: int = 4, group_size: int = 128, sym: bool = False) -> float:
    """Relative Frobenius error ||W - Q(W)|| / ||W||."""
    w = w.detach().float()
    return ((fake_quantize(w, bits, group_size, sym) - w).norm() / w.norm().clamp(min=1e-12)).item()
