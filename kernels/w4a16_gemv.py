"""W4A16 GEMV: y = x @ W.T for one token, W stored as AWQ-packed int4 (labkit.kernels.packing).

At batch 1 a linear layer reads every weight once and does two flops per weight, so its
speed is bytes / bandwidth: int4 weights are a quarter of fp16's bytes, and the kernel is
good when it streams them at close to the copy bandwidth. What that takes, in order:

- Coalesced, wide loads. Rows of `qweight` are K-major: thread `tx` of a block reads words
  4tx..4tx+3 of a row with one 16-byte load, so 8 threads read 128 contiguous bytes.
- Bytes in flight. Each thread owns one task of CHUNK=16 rows and issues all 16 loads
  (256 bytes) before using any; K is split over `ty` threads per block and over blocks
  (splitk.py), so there are tens of thousands of such threads: enough outstanding loads
  to cover the memory latency (Little's law: ~3 TB/s x ~1 us = ~3 MB in flight), and
  blocks that compute while others wait.
- Cheap dequantization. Converting 32 nibbles per load with int->float instructions
  (quarter rate) would make the kernel compute-bound. Instead, OR-ing a nibble into the
  mantissa of 2**23 (bits 0x4B000000) gives the float 2**23 + q exactly; subtracting 2**23
  leaves q. Nibble m of each 16-bit half sits at bits 4m, so it is masked in place
  (giving 16**m * q) and the activation is pre-scaled by 16**-m (exact: a power of two).
  Per weight: one logic op, one add, one fma.
- Zero points and scales once per task: sum_k x_k (q_k - z) s = s (sum_k x_k q_k - z sum_k x_k)
  within a group, so the inner loop never touches z or s.
- A cheap reduction: partial sums go through padded shared memory (no bank conflicts),
  and across blocks through one split-K workspace, not atomics.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from numba import cuda, float32, uint32

from labkit.kernels import launch as L
from labkit.kernels import measure, ptx, splitk
from labkit.kernels.packing import dequantize_int4, random_int4_layer

CHUNK = 16  # rows of K per thread, all loaded at once: 16 x 16 bytes in flight
ROUND = 8  # rows per unrolled round (two rounds per task; registers must be indexed by constants)
ROUND_WORDS = 4 * ROUND
MAGIC = np.uint32(0x4B000000)  # bits of the float 2**23 (passed to kernels as an argument: see dot_round)
MAGIC_F = np.float32(2.0**23)
NIBBLE = np.uint32(0xF)
SIXTEENTH = np.float32(1 / 16)


def reference(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
              group_size: int) -> torch.Tensor:
    """x @ W.T in float64, W dequantized from the packed tensors: what the kernel approximates."""
    w = dequantize_int4(qweight, qzeros, scales, group_size).double()
    return x.double() @ w.t()


@cuda.jit(device=True, inline="always")
def dot_round(wq, xq, xs, acc, magic):
    """acc[c] += x_k * 16**m q_k[c] over 8 rows (words wq, activations xq); returns sum x_k.

    `magic` is MAGIC, but passed in as a kernel argument: a value the compiler cannot see
    stays in a register, and (word & mask) | magic becomes one LOP3 instruction; with two
    literal operands ptxas emits two (seen in the SASS: 2 LOP3 + FADD + FFMA per weight).
    """
    xsum = float32(0)
    for u in range(ROUND):
        x_even, x_odd = ptx.halves(xq[u // 2])
        xk = x_even if u % 2 == 0 else x_odd
        xsum += xk
        xs[0] = xk
        for m in range(1, 4):
            xs[m] = xs[m - 1] * SIXTEENTH  # nibble m is read in place, i.e. times 16**m
        for wi in range(4):
            lo = wq[4 * u + wi]
            hi = lo >> uint32(16)  # odd columns live in the high half
            for m in range(4):
                mask = NIBBLE << uint32(4 * m)
                acc[8 * wi + 2 * m] += (ptx.as_float((lo & mask) | magic) - MAGIC_F) * xs[m]
                acc[8 * wi + 2 * m + 1] += (ptx.as_float((hi & mask) | magic) - MAGIC_F) * xs[m]
    return xsum


@cuda.jit(device=True, inline="always")
def load_round(qweight, xw, k0, words, quad, wq, xq):
    """Issue the 16-byte loads of 8 rows of weights and of their 8 activations."""
    for u in range(ROUND):
        w0, w1, w2, w3 = ptx.load_u32x4(qweight, (k0 + u) * words + quad * 4)
        wq[4 * u], wq[4 * u + 1], wq[4 * u + 2], wq[4 * u + 3] = w0, w1, w2, w3
    xq[0], xq[1], xq[2], xq[3] = ptx.load_u32x4(xw, k0 // 2)


@functools.lru_cache(maxsize=None)
def make_kernel(tx: int, ty: int):
    """The GEMV kernel for blocks of tx x ty threads (tx column quads, ty tasks of K)."""
    red_size = ty * tx * 33  # one padded row of 33 floats per thread: conflict-free

    @L.kernel(threads=tx * ty)
    def gemv(x, qweight, qzeros, scales, group_size, magic, partial, counters, out):
        # x: fp16 [K] as int32 pairs; scales: fp16 [K/g, N] as int32 pairs; out: fp16 [N]
        words = qweight.shape[1]
        n = words * 8
        tix, tiy = cuda.threadIdx.x, cuda.threadIdx.y
        quad = cuda.blockIdx.x * tx + tix  # this thread owns columns 32*quad .. 32*quad + 31
        task = cuda.blockIdx.y * ty + tiy  # ... and rows CHUNK*task .. CHUNK*task + CHUNK - 1
        acc = cuda.local.array(32, float32)
        wa = cuda.local.array(ROUND_WORDS, uint32)
        wb = cuda.local.array(ROUND_WORDS, uint32)
        xa = cuda.local.array(4, uint32)
        xb = cuda.local.array(4, uint32)
        xs = cuda.local.array(4, float32)
        zq = cuda.local.array(4, uint32)
        sq = cuda.local.array(16, uint32)
        for c in range(32):
            acc[c] = 0
        if quad * 4 < words and task < qweight.shape[0] // CHUNK:
            k0 = task * CHUNK
            g = k0 // group_size
            load_round(qweight, x, k0, words, quad, wa, xa)  # every load first: the thread waits
            load_round(qweight, x, k0 + ROUND, words, quad, wb, xb)  # for them, not for arithmetic
            z0, z1, z2, z3 = ptx.load_u32x4(qzeros, g * words + quad * 4)
            zq[0], zq[1], zq[2], zq[3] = z0, z1, z2, z3
            for i in range(4):
                s0, s1, s2, s3 = ptx.load_u32x4(scales, g * (n // 2) + quad * 16 + 4 * i)
                sq[4 * i], sq[4 * i + 1], sq[4 * i + 2], sq[4 * i + 3] = s0, s1, s2, s3
            xsum = dot_round(wa, xa, xs, acc, magic) + dot_round(wb, xb, xs, acc, magic)
            # this group's zero points and scales: s * (sum_k x_k q_k - z * sum_k x_k)
            for wi in range(4):
                for m in range(4):
                    s_even, s_odd = ptx.halves(sq[4 * wi + m])
                    z_even = ptx.as_float(((zq[wi] >> uint32(4 * m)) & NIBBLE) | MAGIC) - MAGIC_F
                    z_odd = ptx.as_float(((zq[wi] >> uint32(4 * m + 16)) & NIBBLE) | MAGIC) - MAGIC_F
                    acc[8 * wi + 2 * m] = s_even * (acc[8 * wi + 2 * m] - z_even * xsum)
                    acc[8 * wi + 2 * m + 1] = s_odd * (acc[8 * wi + 2 * m + 1] - z_odd * xsum)

        # add the ty tasks of this block ...
        red = cuda.shared.array(red_size, float32)
        tid = tiy * tx + tix
        for c in range(32):
            red[tid * 33 + c] = acc[c]
        cuda.syncthreads()
        col0 = cuda.blockIdx.x * tx * 32
        splits = cuda.gridDim.y
        for p in range(tid, tx * 32, tx * ty):
            off = (p // 32) * 33 + p % 32
            total = float32(0)
            for j in range(ty):
                total += red[j * tx * 33 + off]
            if col0 + p < n:
                if splits == 1:
                    out[col0 + p] = total
                else:
                    partial[cuda.blockIdx.y * n + col0 + p] = total
        # ... and the blocks along K: the last block of this column tile finishes it
        if splits > 1 and splitk.last_to_arrive(counters, cuda.blockIdx.x, splits):
            for p in range(tid, tx * 32, tx * ty):
                if col0 + p < n:
                    out[col0 + p] = splitk.sum_partials(partial, splits, n, col0 + p)

    return gemv


def plan(n: int, k: int) -> tuple[int, int]:
    """Block shape (tx, ty): 8 column quads (256 columns, 128-byte rows) x 32 tasks of 16 rows.

    One task per thread: the K dimension is covered by ceil(K / (16 * ty)) blocks per
    column tile, so a 4096 x 4096 layer runs 128 blocks of 256 threads and a 32000 x 4096
    one 1000, and the SMs overlap one block's loads with another's arithmetic. (On an H100,
    ty = 32 beat 16 by 4-17%: fewer partial sums to add across blocks.)
    """
    return (8 if n >= 256 else max(1, n // 32)), 32


def w4a16_gemv(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
               group_size: int, out: torch.Tensor | None = None,
               tile: tuple[int, int] | None = None) -> torch.Tensor:
    """x @ W.T for a single row x ([K] or [1, K], fp16) and AWQ-packed int4 W: fp16 [..., N].

    Needs N % 32 == 0 (each thread loads 16 bytes = 32 columns), group_size % 16 == 0 and
    16-byte aligned tensors; `dispatch.w4a16_linear` falls back otherwise.
    `tile` = (tx, ty) overrides `plan` (tests use tiny blocks in the simulator).
    """
    k, words = qweight.shape
    n = words * 8
    L.require(x.dtype == torch.float16 and x.numel() == k and x.is_contiguous(),
              f"w4a16_gemv wants a contiguous fp16 x with {k} elements, got {x.dtype} {tuple(x.shape)}")
    L.require(n % 32 == 0, f"w4a16_gemv needs N % 32 == 0 (16-byte loads), got N={n}")
    L.require(group_size % CHUNK == 0 and k % group_size == 0,
              f"w4a16_gemv needs group_size % {CHUNK} == 0 and K % group_size == 0, got g={group_size}, K={k}")
    L.require(qzeros.shape == (k // group_size, words) and scales.shape == (k // group_size, n),
              "w4a16_gemv: qzeros/scales shapes do not match qweight")
    for t in (x, qweight, qzeros, scales):
        L.require(t.is_contiguous() and t.data_ptr() % 16 == 0, "w4a16_gemv needs contiguous 16-byte aligned tensors")
    tx, ty = tile or plan(n, k)
    tiles, splits = -(-n // (32 * tx)), -(-k // (CHUNK * ty))
    if out is None:
        out = torch.empty(*x.shape[:-1], n, dtype=torch.float16, device=x.device)
    partial = L.workspace("w4a16_gemv.partial", (max(splits, 2) * n,), torch.float32, x.device)
    counters = L.workspace("w4a16_gemv.counters", (tiles,), torch.int32, x.device)
    L.launch(make_kernel(tx, ty), (tiles, splits), (tx, ty), x.view(torch.int32), qweight, qzeros,
             scales.view(torch.int32), group_size, MAGIC, partial, counters, out.view(-1))
    return out


def check(n: int = 96, k: int = 192, group_size: int = 64,
          tile: tuple[int, int] | None = (2, 2), seed: int | None = None) -> float:
    """Run the kernel on fresh random inputs; return the relative error (raises if too large)."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    dev = L.device()
    qweight, qzeros, scales = random_int4_layer(n, k, group_size, dev, gen)
    x = torch.randn(k, generator=gen).half().to(dev)
    w = dequantize_int4(qweight, qzeros, scales, group_size).double()
    want, abs_want = x.double() @ w.t(), x.double().abs() @ w.abs().t()
    out = measure.poisoned((n,), torch.float16, dev)
    w4a16_gemv(x, qweight, qzeros, scales, group_size, out=out, tile=tile)
    return measure.assert_close(f"w4a16_gemv N={n} K={k} g={group_size}", out, want,
                                measure.dot_tolerance(k, want, abs_want))


def bench(n: int, k: int, group_size: int = 128) -> dict:
    """Time the kernel and fp16 torch.matmul on one layer shape (GPU only)."""
    layer_bytes = k * n // 2 + (k // group_size) * n * 2 + (k // group_size) * n // 2
    sets = measure.sets_for(layer_bytes)
    layers = [random_int4_layer(n, k, group_size, "cuda") for _ in range(sets)]
    x = torch.randn(1, k, device="cuda").half()
    out = torch.empty(1, n, device="cuda", dtype=torch.float16)
    us = measure.time_us(lambda i: w4a16_gemv(x, *layers[i], group_size, out=out), sets)
    dense = [torch.randn(k, n, device="cuda").half() for _ in range(measure.sets_for(2 * k * n))]
    torch_us = measure.time_us(lambda i: torch.matmul(x, dense[i], out=out), len(dense))
    nbytes = layer_bytes + 2 * k + 2 * n
    return {"kernel": "w4a16_gemv", "shape": f"N={n} K={k} g={group_size}", "us": us,
            "bytes": nbytes, "flops": 2 * n * k, "torch_us": torch_us, "tile": list(plan(n, k))}
