"""W4A16 GEMM for a few rows: Y = X @ W.T with X of M = 2..8 rows, W AWQ-packed int4.

With M rows each weight, once dequantized, feeds M fused multiply-adds, so the kernel turns
from memory-bound (GEMV) to bound by fp32 FMA throughput as M grows: at M = 8 the FMAs
alone take about as long as streaming fp16 weights would. What keeps it ahead of fp16
`torch.matmul` is therefore arithmetic, not bytes:

- Dequantize once per weight, not once per row of X: each thread owns one packed word
  (8 columns) and applies it to all M rows, keeping M x 8 fp32 accumulators in registers.
- Dequantize cheaply: as in the GEMV, a nibble masked in place and OR-ed into the mantissa
  of 2**23 is a float; subtracting a per-column constant 2**23 + 16**j z gives 16**j (q - z)
  exactly, and one multiply by s * 16**-j gives the weight: three instructions, shared by
  the M FMAs that use it.
- Latency: a thread loads the 32 rows of a task (one word each) before using any, and
  loops over tasks; K is split over `ty` threads per block and `splits` blocks, which add
  up through shared memory and a workspace (splitk.py).
"""
from __future__ import annotations

import functools

import torch
from numba import cuda, float32, uint32

from labkit.kernels import launch as L
from labkit.kernels import measure, ptx, splitk
from labkit.kernels.packing import dequantize_int4
from labkit.kernels.w4a16_gemv import MAGIC, NIBBLE

CHUNK = 32  # rows of K per task, all loaded before use ...
ROUND = 8  # ... and used in unrolled rounds of 8 (registers must be indexed by constants)
MAX_ROWS = 8  # M x 8 accumulators per thread: 64 registers at M = 8


def reference(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
              group_size: int) -> torch.Tensor:
    """X @ W.T in float64 with W dequantized from the packed tensors."""
    return x.double() @ dequantize_int4(qweight, qzeros, scales, group_size).double().t()


@functools.lru_cache(maxsize=None)
def make_kernel(rows: int, tx: int, ty: int, min_blocks: int = 1):
    """The GEMM kernel for `rows` rows of X and blocks of tx words x ty slices of K
    (min_blocks: the launch bound's blocks per SM, which sets ptxas' register budget)."""
    width = rows * 8  # accumulators per thread
    red_size = ty * tx * (width + 1)  # one padded row per thread

    @cuda.jit(device=True, inline="always")
    def load_round(qweight, k0, words, word, wq):
        for u in range(ROUND):
            wq[u] = ptx.load_u32(qweight, (k0 + u) * words + word)

    @cuda.jit(device=True, inline="always")
    def fma_round(wq, x, half_k, k0, offset, scale, xq, xv, acc, magic):
        """acc[8m + c] += W.T[k, c] * X[m, k] for the 8 rows k0 .. k0 + 7 held in wq."""
        for u in range(ROUND):
            if u % 2 == 0:  # one word of X holds this row and the next
                for m in range(rows):
                    xq[m] = ptx.load_u32(x, m * half_k + (k0 + u) // 2)
            for m in range(rows):
                x_even, x_odd = ptx.halves(xq[m])
                xv[m] = x_even if u % 2 == 0 else x_odd
            lo = wq[u]
            hi = lo >> uint32(16)
            for j in range(4):
                mask = NIBBLE << uint32(4 * j)
                w_even = (ptx.as_float((lo & mask) | magic) - offset[2 * j]) * scale[2 * j]  # one LOP3:
                w_odd = (ptx.as_float((hi & mask) | magic) - offset[2 * j + 1]) * scale[2 * j + 1]  # see dot_round
                for m in range(rows):
                    acc[8 * m + 2 * j] += w_even * xv[m]
                    acc[8 * m + 2 * j + 1] += w_odd * xv[m]

    @L.kernel(threads=tx * ty, min_blocks=min_blocks)
    def gemm(x, qweight, qzeros, scales, group_size, magic, partial, counters, out):
        # x: fp16 [rows, K] as int32 pairs; scales: fp16 [K/g, N] as int32 pairs; out: fp16 [rows, N]
        k_rows, words = qweight.shape
        n = words * 8
        half_k = k_rows // 2
        tix, tiy = cuda.threadIdx.x, cuda.threadIdx.y
        word = cuda.blockIdx.x * tx + tix  # this thread owns columns 8*word .. 8*word + 7
        splits = cuda.gridDim.y
        acc = cuda.local.array(width, float32)
        offset = cuda.local.array(8, float32)
        scale = cuda.local.array(8, float32)
        w0 = cuda.local.array(ROUND, uint32)
        w1 = cuda.local.array(ROUND, uint32)
        w2 = cuda.local.array(ROUND, uint32)
        w3 = cuda.local.array(ROUND, uint32)
        xq = cuda.local.array(rows, uint32)
        xv = cuda.local.array(rows, float32)
        for c in range(width):
            acc[c] = 0
        first = cuda.blockIdx.y * ty + tiy + ptx.wait_for_previous_grid()  # loads below come after the wait
        ptx.allow_next_grid()
        if word < words:
            for task in range(first, k_rows // CHUNK, splits * ty):
                k0 = task * CHUNK
                g = k0 // group_size
                load_round(qweight, k0, words, word, w0)  # all 32 rows in flight
                load_round(qweight, k0 + ROUND, words, word, w1)
                load_round(qweight, k0 + 2 * ROUND, words, word, w2)
                load_round(qweight, k0 + 3 * ROUND, words, word, w3)
                zw = ptx.load_u32(qzeros, g * words + word)
                step = float32(1)
                for j in range(4):  # columns 2j (low half-word) and 2j + 1 (high half-word)
                    mask = NIBBLE << uint32(4 * j)
                    offset[2 * j] = ptx.as_float((zw & mask) | MAGIC)  # 2**23 + 16**j z
                    offset[2 * j + 1] = ptx.as_float(((zw >> uint32(16)) & mask) | MAGIC)
                    s_even, s_odd = ptx.halves(ptx.load_u32(scales, g * (n // 2) + 4 * word + j))
                    scale[2 * j], scale[2 * j + 1] = s_even * step, s_odd * step
                    step *= float32(1 / 16)
                fma_round(w0, x, half_k, k0, offset, scale, xq, xv, acc, magic)
                fma_round(w1, x, half_k, k0 + ROUND, offset, scale, xq, xv, acc, magic)
                fma_round(w2, x, half_k, k0 + 2 * ROUND, offset, scale, xq, xv, acc, magic)
                fma_round(w3, x, half_k, k0 + 3 * ROUND, offset, scale, xq, xv, acc, magic)

        # add up the ty slices of this block through shared memory (rows padded to an odd stride)
        red = cuda.shared.array(red_size, float32)
        tid = tiy * tx + tix
        for c in range(width):
            red[tid * (width + 1) + c] = acc[c]
        cuda.syncthreads()
        col0 = cuda.blockIdx.x * tx * 8
        for i in range(tid, rows * tx * 8, tx * ty):
            m, p = i // (tx * 8), i % (tx * 8)
            off = (p // 8) * (width + 1) + 8 * m + p % 8
            total = float32(0)
            for j in range(ty):
                total += red[j * tx * (width + 1) + off]
            if col0 + p < n:
                if splits == 1:
                    out[m * n + col0 + p] = total
                else:
                    partial[(cuda.blockIdx.y * rows + m) * n + col0 + p] = total
        if splits > 1 and splitk.last_to_arrive(counters, cuda.blockIdx.x, splits):
            for i in range(tid, rows * tx * 8, tx * ty):
                m, p = i // (tx * 8), i % (tx * 8)
                if col0 + p < n:
                    out[m * n + col0 + p] = splitk.sum_partials(partial, splits, rows * n, m * n + col0 + p)

    return gemm


def plan(m: int, n: int, k: int) -> tuple[int, int, int]:
    """(tx, ty, splits): 16 words (128 columns) x 8 slices of K per block, and enough blocks
    along K for ~2 per SM; more splits would cost more in partial sums (M x N floats each)."""
    tx, ty = min(16, max(1, n // 8)), 8
    tiles, tasks = -(-n // (8 * tx)), k // CHUNK
    wanted = max(1, round(2 * L.sm_count() / tiles))
    return tx, ty, max(1, min(wanted, tasks // ty))


def w4a16_gemm(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
               group_size: int, out: torch.Tensor | None = None,
               tile: tuple[int, int, int] | None = None, min_blocks: int = 1) -> torch.Tensor:
    """X @ W.T for fp16 X [M, K] (M <= 8) and AWQ-packed int4 W: fp16 [M, N].

    Needs group_size % 32 == 0 and K % group_size == 0; `tile` = (tx, ty, splits)
    overrides `plan`.
    """
    k, words = qweight.shape
    n = words * 8
    L.require(x.dim() == 2 and x.shape[1] == k and x.dtype == torch.float16 and x.is_contiguous(),
              f"w4a16_gemm wants a contiguous fp16 X [M, {k}], got {x.dtype} {tuple(x.shape)}")
    m = x.shape[0]
    L.require(1 <= m <= MAX_ROWS, f"w4a16_gemm takes 1..{MAX_ROWS} rows, got {m}")
    L.require(group_size % CHUNK == 0 and k % group_size == 0,
              f"w4a16_gemm needs group_size % 32 == 0 and K % group_size == 0, got g={group_size}, K={k}")
    L.require(qzeros.shape == (k // group_size, words) and scales.shape == (k // group_size, n),
              "w4a16_gemm: qzeros/scales shapes do not match qweight")
    tx, ty, splits = tile or plan(m, n, k)
    tiles = -(-n // (8 * tx))
    if out is None:
        out = torch.empty(m, n, dtype=torch.float16, device=x.device)
    partial = L.workspace("w4a16_gemm.partial", (max(splits, 2) * m * n,), torch.float32, x.device)
    counters = L.workspace("w4a16_gemm.counters", (tiles,), torch.int32, x.device)
    L.launch(make_kernel(m, tx, ty, min_blocks), (tiles, splits), (tx, ty), x.view(torch.int32), qweight, qzeros,
             scales.view(torch.int32), group_size, MAGIC, partial, counters, out.view(-1), overlap=True)
    return out


def check(m: int = 3, n: int = 40, k: int = 96, group_size: int = 32,
          tile: tuple[int, int, int] | None = (4, 2, 2), seed: int | None = None) -> float:
    """Run the kernel on fresh random inputs; return the relative error (raises if too large)."""
    return measure.check_int4_linear(w4a16_gemm, m, n, k, group_size, seed, tile=tile)


def bench(m: int, n: int, k: int, group_size: int = 128) -> dict:
    """Time the kernel and fp16 torch.matmul for M rows on one layer shape (GPU only)."""
    row = measure.bench_int4_linear(w4a16_gemm, m, n, k, group_size)
    return {**row, "tile": list(plan(m, n, k))}
