"""W4A16 GEMV: y = x @ W.T for one token, W stored as AWQ-packed int4 (labkit.kernels.packing).

At batch 1 a linear layer reads every weight once and does two flops per weight, so its
speed is bytes / bandwidth: int4 weights are a quarter of fp16's bytes, and the kernel is
good when it streams them at close to the copy bandwidth. What that takes, in order:

- Coalesced, wide loads. Rows of `qweight` are K-major: thread `tx` of a block reads words
  4tx..4tx+3 of a row with one 16-byte load, so 8 threads read 128 contiguous bytes.
- Bytes in flight, all the time. A thread owns 32 columns and a run of `rounds` x 8 rows
  of K inside one quantization group, and streams it through a ring of `depth` register
  stages: while it computes one round of 8 rows, the next depth - 1 rounds are loading
  (Little's law: ~3 TB/s x ~1 us = ~3 MB must be in flight across the GPU). A thread that
  loads everything first and then computes leaves the memory idle while it computes, and
  a kernel that does that in whole waves of blocks runs far below the bandwidth (the
  kernel notes in docs/benchmarks.md compare the two).
- Two instructions per weight. A nibble masked in place is the bit pattern of a
  *subnormal* float: nibble m of a 16-bit half, at bits 4m, reads as q * 16**m * 2**-149.
  Scaling the activation by 2**100 * 16**-m (exact: powers of two) turns one FFMA into
  acc += q * x * 2**-49, exactly, and GPUs do FMAs on subnormal inputs at full speed (no
  flush to zero without fastmath). Per weight: one AND, one FFMA. (The classic trick ORs the
  nibble into the mantissa of 2**23 and subtracts 2**23 again: a third instruction.)
- Zero points and scales once per run: sum_k x_k (q_k - z) s = s (sum_k x_k q_k - z sum_k x_k)
  within a group, so the inner loop never touches z or s.
- A cheap reduction: partial sums go through padded shared memory (no bank conflicts),
  and across blocks through one split-K workspace, not atomics.
- A fixed cost per launch (the ramp to the first loads, the drain of the last round and the
  reductions) that bytes do not pay for. Launched overlapped (`launch.launch(overlap=True)`),
  the kernel starts while the previous one drains and waits (`ptx.wait_for_previous_grid`)
  only before its first load. It waits before the weight loads too: issuing them earlier
  held them in registers across the wait and cost more in occupancy than it gained.

`MAGIC` and friends are the 2**23 constants of the classic trick, which the kernels that
convert a weight once and use it several times (GEMM, dequantize, attention) still use.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from numba import cuda, float32, uint32

from labkit.kernels import launch as L
from labkit.kernels import measure, ptx, splitk
from labkit.kernels.packing import dequantize_int4

ROUND = 8  # rows per round: one 16-byte load per row and thread, plus 8 activations (16 bytes)
ROUND_WORDS = 4 * ROUND
X_SCALE = tuple(np.float32(2.0 ** (100 - 4 * m)) for m in range(4))  # x * 2**100 / 16**m
UNSCALE = np.float32(2.0**49)  # subnormal q (2**-149) times x * 2**100 is q * x * 2**-49
MAGIC = np.uint32(0x4B000000)  # bits of the float 2**23 (the classic trick, see above)
MAGIC_F = np.float32(2.0**23)
NIBBLE = np.uint32(0xF)


def reference(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
              group_size: int) -> torch.Tensor:
    """x @ W.T in float64, W dequantized from the packed tensors: what the kernel approximates."""
    w = dequantize_int4(qweight, qzeros, scales, group_size).double()
    return x.double() @ w.t()


@L.inlined
def load_round(qweight, x, row, words, quad, wq, xq, stage):
    """Into register stage `stage`: the 16-byte loads of rows row..row+7 and of their activations."""
    for u in range(ROUND):
        w0, w1, w2, w3 = ptx.load_u32x4_once(qweight, (row + u) * words + quad * 4)
        b = ROUND_WORDS * stage + 4 * u
        wq[b], wq[b + 1], wq[b + 2], wq[b + 3] = w0, w1, w2, w3
    x0, x1, x2, x3 = ptx.load_u32x4(x, row // 2)
    xq[4 * stage], xq[4 * stage + 1], xq[4 * stage + 2], xq[4 * stage + 3] = x0, x1, x2, x3


@L.inlined
def dot_round(wq, xq, stage, acc, xsum):
    """acc[c] += q_k[c] * x_k * 2**-49 over the 8 rows of register stage `stage`; xsum[0] += sum x_k."""
    for p in range(ROUND // 2):
        x_even, x_odd = ptx.halves(xq[4 * stage + p])
        for u in range(2):
            xk = x_even if u == 0 else x_odd
            xsum[0] += xk
            xs0, xs1, xs2, xs3 = xk * X_SCALE[0], xk * X_SCALE[1], xk * X_SCALE[2], xk * X_SCALE[3]
            for wi in range(4):
                lo = wq[ROUND_WORDS * stage + 4 * (2 * p + u) + wi]
                hi = lo >> uint32(16)  # odd columns live in the high half
                for m in range(4):
                    xs = xs0 if m == 0 else xs1 if m == 1 else xs2 if m == 2 else xs3
                    mask = NIBBLE << uint32(4 * m)
                    acc[8 * wi + 2 * m] += ptx.as_float(lo & mask) * xs
                    acc[8 * wi + 2 * m + 1] += ptx.as_float(hi & mask) * xs


def fill_step(i: int):
    """Prologue step i: round i into stage i."""

    @L.inlined
    def fill(qweight, x, row0, words, quad, wq, xq, acc, xsum, unused):
        load_round(qweight, x, row0 + ROUND * i, words, quad, wq, xq, i)

    return fill


def turn_step(i: int, rounds: int, depth: int):
    """Step i: load round i + depth - 1 into the stage round i - 1 left free, then compute round i."""
    ahead = i + depth - 1

    @L.inlined
    def turn(qweight, x, row0, words, quad, wq, xq, acc, xsum, unused):
        if ahead < rounds:  # constants: decided when the kernel is compiled
            load_round(qweight, x, row0 + ROUND * ahead, words, quad, wq, xq, ahead % depth)
        dot_round(wq, xq, i % depth, acc, xsum)

    return turn


@functools.lru_cache(maxsize=None)
def make_kernel(tx: int, ty: int, rounds: int, depth: int, min_blocks: int = 1):
    """The GEMV for blocks of tx x ty threads (tx column quads, ty runs of `rounds` x 8 rows of
    K), streaming each run through `depth` register stages (depth - 1 rounds in flight)."""
    red_size = ty * tx * 33  # one padded row of 33 floats per thread: conflict-free
    fill = L.unrolled(fill_step, min(depth - 1, rounds))
    turn = L.unrolled(lambda i: turn_step(i, rounds, depth), rounds)
    run_rows, ring_words, ring_x = ROUND * rounds, ROUND_WORDS * depth, 4 * depth

    @L.kernel(threads=tx * ty, min_blocks=min_blocks)
    def gemv(x, qweight, qzeros, scales, group_size, partial, counters, out):
        # x: fp16 [K] as int32 pairs; scales: fp16 [K/g, N] as int32 pairs; out: fp16 [N]
        words = qweight.shape[1]
        n = words * 8
        tix, tiy = cuda.threadIdx.x, cuda.threadIdx.y
        quad = cuda.blockIdx.x * tx + tix  # this thread owns columns 32*quad .. 32*quad + 31
        row0 = (cuda.blockIdx.y * ty + tiy) * run_rows  # ... and rows row0 .. row0 + run_rows - 1
        acc = cuda.local.array(32, float32)
        wq = cuda.local.array(ring_words, uint32)
        xq = cuda.local.array(ring_x, uint32)
        xsum = cuda.local.array(1, float32)
        zq = cuda.local.array(4, uint32)
        sq = cuda.local.array(16, uint32)
        for c in range(32):
            acc[c] = 0
        xsum[0] = 0
        # everything below may read what the previous kernel writes: wait for it (and load after it)
        row0 += ptx.wait_for_previous_grid()
        ptx.allow_next_grid()
        if quad * 4 < words and row0 < qweight.shape[0]:
            g = row0 // group_size  # the run lies inside one group
            fill(qweight, x, row0, words, quad, wq, xq, acc, xsum, 0)
            z0, z1, z2, z3 = ptx.load_u32x4(qzeros, g * words + quad * 4)  # needed only at the end
            zq[0], zq[1], zq[2], zq[3] = z0, z1, z2, z3
            for i in range(4):
                s0, s1, s2, s3 = ptx.load_u32x4(scales, g * (n // 2) + quad * 16 + 4 * i)
                sq[4 * i], sq[4 * i + 1], sq[4 * i + 2], sq[4 * i + 3] = s0, s1, s2, s3
            turn(qweight, x, row0, words, quad, wq, xq, acc, xsum, 0)
            # this group's zero points and scales: s * (sum_k x_k q_k - z * sum_k x_k)
            for wi in range(4):
                for m in range(4):
                    s_even, s_odd = ptx.halves(sq[4 * wi + m])
                    z_even = float32((zq[wi] >> uint32(4 * m)) & NIBBLE)
                    z_odd = float32((zq[wi] >> uint32(4 * m + 16)) & NIBBLE)
                    acc[8 * wi + 2 * m] = s_even * (acc[8 * wi + 2 * m] * UNSCALE - z_even * xsum[0])
                    acc[8 * wi + 2 * m + 1] = s_odd * (acc[8 * wi + 2 * m + 1] * UNSCALE - z_odd * xsum[0])

        # add the ty runs of this block ...
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


def plan(n: int, k: int, group_size: int) -> tuple[int, int, int, int, int]:
    """(tx, ty, rounds, depth, min_blocks): runs of 4 rounds (32 rows) through 3 register
    stages, 32 runs per block along K, 4 column quads per block (8 on very wide layers), and
    at least 2 blocks per SM.

    Chosen among 20 variants (docs/benchmarks.md, GEMV sweep): runs of 32 rows beat 16 (more
    loads in flight per thread) and 64 or 128 (too few threads for a layer of 4096 columns);
    4 quads per block beat 8 except on the widest layers. Two blocks per SM for 8 quads too
    caps registers at 128: left free, ptxas gave the overlapped kernel 147 and one block of
    256 threads per SM. Runs shrink when the group is smaller than 32 rows.
    """
    rounds = 4
    while (group_size // ROUND) % rounds:
        rounds //= 2
    tx = 8 if n >= 16384 else 4
    tx = min(tx, max(1, n // 32))
    return tx, 32, rounds, 3, 2


def w4a16_gemv(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
               group_size: int, out: torch.Tensor | None = None,
               tile: tuple[int, int, int, int, int] | None = None) -> torch.Tensor:
    """x @ W.T for a single row x ([K] or [1, K], fp16) and AWQ-packed int4 W: fp16 [..., N].

    Needs N % 32 == 0 (each thread loads 16 bytes = 32 columns), group_size % 8 == 0 and
    16-byte aligned tensors; `dispatch.w4a16_linear` falls back otherwise. `tile` =
    (tx, ty, rounds, depth, min_blocks) overrides `plan` (tests use tiny blocks in the
    simulator); a run of rounds x 8 rows must divide the group.
    """
    k, words = qweight.shape
    n = words * 8
    L.require(x.dtype == torch.float16 and x.numel() == k and x.is_contiguous(),
              f"w4a16_gemv wants a contiguous fp16 x with {k} elements, got {x.dtype} {tuple(x.shape)}")
    L.require(n % 32 == 0, f"w4a16_gemv needs N % 32 == 0 (16-byte loads), got N={n}")
    L.require(group_size % ROUND == 0 and k % group_size == 0,
              f"w4a16_gemv needs group_size % {ROUND} == 0 and K % group_size == 0, got g={group_size}, K={k}")
    L.require(qzeros.shape == (k // group_size, words) and scales.shape == (k // group_size, n),
              "w4a16_gemv: qzeros/scales shapes do not match qweight")
    for t in (x, qweight, qzeros, scales):
        L.require(t.is_contiguous() and t.data_ptr() % 16 == 0, "w4a16_gemv needs contiguous 16-byte aligned tensors")
    tx, ty, rounds, depth, min_blocks = tile or plan(n, k, group_size)
    L.require(group_size % (ROUND * rounds) == 0,
              f"w4a16_gemv: runs of {ROUND * rounds} rows must divide the group size {group_size}")
    tiles, splits = -(-n // (32 * tx)), -(-k // (ROUND * rounds * ty))
    if out is None:
        out = torch.empty(*x.shape[:-1], n, dtype=torch.float16, device=x.device)
    partial = L.workspace("w4a16_gemv.partial", (max(splits, 2) * n,), torch.float32, x.device)
    counters = L.workspace("w4a16_gemv.counters", (tiles,), torch.int32, x.device)
    L.launch(make_kernel(tx, ty, rounds, depth, min_blocks), (tiles, splits), (tx, ty), x.view(torch.int32),
             qweight, qzeros, scales.view(torch.int32), group_size, partial, counters, out.view(-1), overlap=True)
    return out


def check(n: int = 96, k: int = 192, group_size: int = 64,
          tile: tuple[int, int, int, int, int] | None = (2, 2, 2, 2, 1), seed: int | None = None) -> float:
    """Run the kernel on fresh random inputs; return the relative error (raises if too large)."""
    return measure.check_int4_linear(w4a16_gemv, 1, n, k, group_size, seed, tile=tile)


def bench(n: int, k: int, group_size: int = 128) -> dict:
    """Time the kernel and fp16 torch.matmul on one layer shape (GPU only)."""
    row = measure.bench_int4_linear(w4a16_gemv, 1, n, k, group_size)
    return {**row, "shape": f"N={n} K={k} g={group_size}", "tile": list(plan(n, k, group_size))}
