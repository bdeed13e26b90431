"""Int4 -> fp16 dequantization on the GPU: the third option of the dispatcher.

For many rows of X (prefill) a linear layer is compute-bound and cuBLAS's fp16 matmul on
tensor cores is the fastest way to multiply; the int4 weights then only need to become a
dense fp16 matrix first. Writing W.T [K, N] (the layout qweight already has, so each
thread reads one packed word and writes its 8 neighbours, 16 bytes, with one store) costs
one pass over 4x the int4 bytes, small next to an M x N x K matmul once M is in the hundreds.

How it streams (docs/benchmarks.md, NVIDIA H200): one word per thread written as 8 two-byte
stores moved the bytes at ~60% of the copy bandwidth, and a prefill step of a 7B W4A16 model
spent ~6 ms dequantizing; one 16-byte store per word, and 4 rows of K per thread whose
words are loaded before any is used (more loads in flight), move them at 86-91%. The rows of
a thread share one group: checking every row for the end of K or a new group took it back
to 70-75%.
"""
from __future__ import annotations

import torch
from numba import cuda, uint32

from labkit.kernels import launch as L
from labkit.kernels import measure, ptx
from labkit.kernels.packing import dequantize_int4, random_int4_layer
from labkit.kernels.w4a16_gemv import MAGIC, MAGIC_F, NIBBLE

THREADS = (32, 8)  # 32 words of a row x 8 threads along K per block
ROWS = 4  # rows of K per thread: their weight words loaded before any is used


def reference(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group_size: int) -> torch.Tensor:
    """W.T [K, N] in fp16, computed by torch (packing.dequantize_int4)."""
    return dequantize_int4(qweight, qzeros, scales, group_size).t()


@L.kernel(threads=THREADS[0] * THREADS[1])
def dequant(qweight, qzeros, scales, group_size, wt):
    # scales: fp16 [K/g, N] as int32 pairs; wt: fp16 [K * N] as int32 pairs, row k = W.T[k];
    # group_size and K are multiples of ROWS: a thread's rows share one group
    k_rows, words = qweight.shape
    half_n = words * 4  # words of fp16 pairs in a row of W.T (or of the scales)
    word = cuda.blockIdx.x * THREADS[0] + cuda.threadIdx.x
    k0 = (cuda.blockIdx.y * THREADS[1] + cuda.threadIdx.y) * ROWS
    if word < words and k0 < k_rows:
        w = cuda.local.array(ROWS, uint32)
        for r in range(ROWS):
            w[r] = ptx.load_u32(qweight, (k0 + r) * words + word)
        g = k0 // group_size
        z = ptx.load_u32(qzeros, g * words + word)
        s = cuda.local.array(4, uint32)  # the scales of columns 8 word .. 8 word + 7, two a word
        s[0], s[1], s[2], s[3] = ptx.load_u32x4(scales, g * half_n + 4 * word)
        out = cuda.local.array(4, uint32)
        for r in range(ROWS):
            for j in range(4):  # columns 2j (low half-word of the packed word) and 2j + 1 (high)
                s_even, s_odd = ptx.halves(s[j])
                q_even = ptx.as_float(((w[r] >> uint32(4 * j)) & NIBBLE) | MAGIC) - MAGIC_F
                q_odd = ptx.as_float(((w[r] >> uint32(4 * j + 16)) & NIBBLE) | MAGIC) - MAGIC_F
                z_even = ptx.as_float(((z >> uint32(4 * j)) & NIBBLE) | MAGIC) - MAGIC_F
                z_odd = ptx.as_float(((z >> uint32(4 * j + 16)) & NIBBLE) | MAGIC) - MAGIC_F
                out[j] = ptx.pack_halves((q_even - z_even) * s_even, (q_odd - z_odd) * s_odd)
            # the thread's 8 columns are 16 contiguous bytes of the row: one store
            ptx.store_u32x4(wt, (k0 + r) * half_n + 4 * word, out[0], out[1], out[2], out[3])


def dequantize_t(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group_size: int,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """W.T [K, N] fp16 from AWQ-packed int4 tensors, by the kernel (by torch where a group is
    not a multiple of ROWS rows)."""
    k, words = qweight.shape
    n = words * 8
    L.require(k % group_size == 0 and scales.shape == (k // group_size, n),
              f"dequantize_t: shapes disagree (qweight {tuple(qweight.shape)}, scales {tuple(scales.shape)})")
    if out is None:
        out = torch.empty(k, n, dtype=torch.float16, device=qweight.device)
    if group_size % ROWS:  # (per-channel groups of a K that is not a multiple of 4): torch does it
        return out.copy_(reference(qweight, qzeros, scales, group_size))
    grid = (-(-words // THREADS[0]), -(-k // (THREADS[1] * ROWS)))
    L.launch(dequant, grid, THREADS, qweight, qzeros, scales.view(torch.int32), group_size,
             out.view(torch.int32).view(-1))
    return out


def check(n: int = 40, k: int = 96, group_size: int = 32, seed: int | None = None) -> float:
    """Dequantize fresh random weights; the result must equal torch's exactly."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    layer = random_int4_layer(n, k, group_size, L.device(), gen)
    out = measure.poisoned((k, n), torch.float16, L.device())
    dequantize_t(*layer, group_size, out=out)
    return measure.assert_close(f"dequant N={n} K={k}", out, reference(*layer, group_size), 0.0)
