"""Int4 weight packing: the one layout every part of labkit reads and writes.

labkit stores 4-bit weights in the AutoAWQ "gemm" layout (docs/internals.md), so that
checkpoints made by `labkit lite` load in engines that read AWQ checkpoints, and so that
the kernels read the checkpoint tensors as they are, with no repacking at load time.

For `y = x @ W.T` with `W` of shape `[N, K]` and group size `g`:

    qweight  int32   [K, N // 8]       8 unsigned nibbles per word, K-major (rows of W.T)
    qzeros   int32   [K // g, N // 8]  zero points, packed the same way
    scales   float16 [K // g, N]

Within a word, nibble `i` (bits 4i..4i+3) holds column `8j + AWQ_ORDER[i]`. The order is
not arbitrary: the low 16 bits hold the even columns and the high 16 bits the odd ones,
so a kernel splits a word into two halves and reads columns (2m, 2m + 1) from nibble m
of each half with the same mask.

    W.T[k, n] = (q[k, n] - z[k // g, n]) * s[k // g, n]

Everything here is plain torch (no Numba), so the quantizer and CPU-only code can import
it cheaply; `quantize_int4` exists to make test data, not to be a good quantizer.
"""
from __future__ import annotations

import torch

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
"""Nibble i of a word holds column 8j + AWQ_ORDER[i]."""

AWQ_REVERSE_ORDER = (0, 4, 1, 5, 2, 6, 3, 7)
"""Column 8j + c sits in nibble AWQ_REVERSE_ORDER[c]."""

_SHIFTS = torch.tensor([4 * AWQ_REVERSE_ORDER[c] for c in range(8)], dtype=torch.int64)


def pack_int4(values: torch.Tensor) -> torch.Tensor:
    """Pack integers in [0, 15] of shape [R, C] (C a multiple of 8) into int32 [R, C // 8].

    Column 8j + c of `values` goes to nibble AWQ_REVERSE_ORDER[c] of word j. Used for
    both `qweight` (pass q as [K, N], i.e. W.T) and `qzeros` ([K // g, N]).
    """
    if values.dim() != 2 or values.shape[1] % 8:
        raise ValueError(f"pack_int4 wants [R, C] with C a multiple of 8, got {tuple(values.shape)}")
    v = values.to(torch.int64)
    if v.numel() and (v.min() < 0 or v.max() > 15):
        raise ValueError("pack_int4 wants values in [0, 15]")
    rows, cols = v.shape
    words = (v.view(rows, cols // 8, 8) << _SHIFTS.to(v.device)).sum(dim=-1)
    # Bit 31 set means a negative int32: wrap the unsigned 32-bit value into range.
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of `pack_int4`: int32 [R, C // 8] -> uint8 [R, C] with values in [0, 15]."""
    if packed.dtype != torch.int32 or packed.dim() != 2:
        raise ValueError(f"unpack_int4 wants a 2-D int32 tensor, got {packed.dtype} {tuple(packed.shape)}")
    rows, words = packed.shape
    nibbles = (packed.to(torch.int64).unsqueeze(-1) >> _SHIFTS.to(packed.device)) & 0xF
    return nibbles.view(rows, words * 8).to(torch.uint8)


def dequantize_int4(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                    group_size: int) -> torch.Tensor:
    """The dense weight W [N, K] (dtype of `scales`) of an AWQ-packed int4 layer.

    The torch fallback for CPUs, and the reference every int4 kernel is checked against.
    """
    q = unpack_int4(qweight).to(scales.dtype)                       # [K, N]
    z = unpack_int4(qzeros).to(scales.dtype)                        # [K // g, N]
    k = q.shape[0]
    if k % group_size or z.shape[0] != k // group_size or scales.shape != z.shape:
        raise ValueError(f"int4 shapes disagree: qweight {tuple(qweight.shape)}, qzeros "
                         f"{tuple(qzeros.shape)}, scales {tuple(scales.shape)}, group {group_size}")
    wt = (q - z.repeat_interleave(group_size, 0)) * scales.repeat_interleave(group_size, 0)
    return wt.t().contiguous()


def quantize_int4(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round-to-nearest asymmetric int4 of W [N, K]: (qweight, qzeros, scales), for test data.

    Zero points are integers in [0, 15] (they must fit a nibble); scales are float16.
    """
    n, k = w.shape
    if k % group_size or n % 8:
        raise ValueError(f"quantize_int4 wants K % group_size == 0 and N % 8 == 0, got {n}x{k}, g={group_size}")
    g = w.t().float().reshape(k // group_size, group_size, n)      # [groups, g, N]
    lo, hi = g.amin(dim=1), g.amax(dim=1)
    scales = ((hi - lo) / 15).clamp(min=1e-5).half()
    s = scales.float()
    zeros = torch.round(-lo / s).clamp(0, 15)
    q = torch.clamp(torch.round(g / s.unsqueeze(1)) + zeros.unsqueeze(1), 0, 15)
    return pack_int4(q.reshape(k, n)), pack_int4(zeros), scales


def random_int4_layer(n: int, k: int, group_size: int, device: str | torch.device = "cpu",
                      generator: torch.Generator | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random packed int4 weights with every nibble value in use: the inputs kernels are tested on.

    Uniform nibbles and zero points exercise all 16 codes (RTN on Gaussian data rarely
    reaches the extremes); scales are around 1/64 so outputs stay well inside fp16 range.
    """
    q = torch.randint(0, 16, (k, n), generator=generator)
    z = torch.randint(0, 16, (k // group_size, n), generator=generator)
    s = (torch.rand(k // group_size, n, generator=generator) + 0.5) / 64
    return pack_int4(q).to(device), pack_int4(z).to(device), s.half().to(device)
