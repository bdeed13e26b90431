"""W4A16 GEMV: y = x @ W.T for one token, W stored as AWQ-packed int4 (labkit.kernels.packing).

At batch 1 a linear layer reads every weight once and does two flops per weight, so its
speed is bytes / bandwidth: int4 weights are a quarter of fp16's bytes, and the kernel is
good when it streams them at close to the copy bandwidth. What that takes, in order:

- Coalesced, wide loads. Rows of `qweight` are K-major: thread `tx` of a block reads words
  4tx..4tx+3 of a row with one 16-byte load, so 8 threads read 128 contiguous bytes.
  (Small layers take 4-byte loads, one word per thread: `plan` says when.)
- Bytes in flight, all the time. A thread owns 32 columns (8 with 4-byte loads) and a run
  of `rounds` x 8 rows of K inside one quantization group, and streams it through a ring of
  `depth` register stages: while it computes one round of 8 rows, the next depth - 1 rounds are loading
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
- Enough threads. A grid of 16-byte loads has one thread per 32 columns and 32 rows: 128
  blocks of 128 threads for a 4096 x 4096 layer, under one per SM. There a thread's serial
  work is the kernel's time; four times the threads with 4-byte loads take 21% less.
- A fixed cost per launch (the ramp to the first loads, the drain of the last round and the
  reductions) that bytes do not pay for: on an H200 ~5.9 us a launch, against ~2.3 us for
  the fp16 GEMV, which splits no K (docs/benchmarks.md, "what bounds the int4 GEMV").
  Launched overlapped (`launch.launch(overlap=True)`), the kernel starts while the previous
  one drains and waits (`ptx.wait_for_previous_grid`) only before its first load. It waits
  before the weight loads too: issuing them earlier held them in registers across the wait
  and cost more in occupancy than it gained. It lets the next kernel start launching
  (`ptx.allow_next_grid`) once its weights are in, before the reductions; the same statement
  right after the wait (where it first sat) made a layer's four fused GEMVs 11% slower,
  launched either way, and overlapped ones slower than plain (docs/benchmarks.md, "every
  kernel of the decode layer overlapped").

`MAGIC` and friends are the 2**23 constants of the classic trick, which the kernels that
convert a weight once and use it several times (GEMM, dequantize, attention) still use.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from numba import cuda, float32, uint32

from labkit.kernels import launch as L
from labkit.kernels import measure, ptx, splitk
from labkit.kernels.packing import dequantize_int4, random_int4_layer

ROUND = 8  # rows per round: one load of `width` words per row and thread, plus 8 activations (16 bytes)
WIDTHS = (1, 2, 4)  # words (8 columns each) a thread loads per row: 4-, 8- or 16-byte loads
X_SCALE = tuple(np.float32(2.0 ** (100 - 4 * m)) for m in range(4))  # x * 2**100 / 16**m
UNSCALE = np.float32(2.0**49)  # subnormal q (2**-149) times x * 2**100 is q * x * 2**-49
MAGIC = np.uint32(0x4B000000)  # bits of the float 2**23 (the classic trick, see above)
MAGIC_F = np.float32(2.0**23)
NIBBLE = np.uint32(0xF)


PROLOGUES = ("none", "rmsnorm", "silu_mul")


def activation(x: torch.Tensor, prologue: str = "none", norm: torch.Tensor | None = None,
               eps: float = 1e-5) -> torch.Tensor:
    """The fp16 row a fused GEMV multiplies, computed as the model computes it: `rmsnorm` is
    labkit's RMSNorm (float32, rounded to fp16, times the fp16 weight `norm`), `silu_mul` is
    SiLU(gate) * up in fp16 for x = [gate, up]."""
    if prologue == "rmsnorm":
        return norm * F.rms_norm(x.float(), x.shape[-1:], eps=eps).to(x.dtype)
    if prologue == "silu_mul":
        gate, up = x.chunk(2, -1)
        return F.silu(gate) * up
    return x


def reference(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
              group_size: int, prologue: str = "none", norm: torch.Tensor | None = None, eps: float = 1e-5,
              residual: torch.Tensor | None = None) -> torch.Tensor:
    """residual + activation(x) @ W.T in float64, W dequantized from the packed tensors: what the
    kernel approximates."""
    w = dequantize_int4(qweight, qzeros, scales, group_size).double()
    y = activation(x, prologue, norm, eps).double() @ w.t()
    return y if residual is None else y + residual.double()


@functools.lru_cache(maxsize=None)
def word_loader(width: int, once: bool):
    """load(src, at, dst, base): dst[base : base + width] = the words src.flat[at : at + width], one
    4-, 8- or 16-byte load (`once`: marked last use, for weights)."""
    if width == 4:
        vector = ptx.load_u32x4_once if once else ptx.load_u32x4

        @L.inlined
        def load(src, at, dst, base):
            dst[base], dst[base + 1], dst[base + 2], dst[base + 3] = vector(src, at)
    elif width == 2:
        vector = ptx.load_u32x2_once if once else ptx.load_u32x2

        @L.inlined
        def load(src, at, dst, base):
            dst[base], dst[base + 1] = vector(src, at)
    else:
        scalar = ptx.load_u32_once if once else ptx.load_u32

        @L.inlined
        def load(src, at, dst, base):
            dst[base] = scalar(src, at)
    return load


@functools.lru_cache(maxsize=None)
def weight_loader(width: int):
    """load_weights for threads of `width` words."""
    load = word_loader(width, True)

    @L.inlined
    def load_weights(qweight, row, words, chunk, wq, stage):
        """Into register stage `stage`: rows row..row+7 of this thread's words (one load per row)."""
        for u in range(ROUND):
            load(qweight, (row + u) * words + chunk * width, wq, width * (ROUND * stage + u))

    return load_weights


@L.inlined
def load_x(x, at, xq, stage):
    """Into register stage `stage`: the 8 activations of a round, one 16-byte load from x (global)."""
    x0, x1, x2, x3 = ptx.load_u32x4(x, at)
    xq[4 * stage], xq[4 * stage + 1], xq[4 * stage + 2], xq[4 * stage + 3] = x0, x1, x2, x3


@L.inlined
def load_x2(x, at, y, at_y, xq, stage):
    """Into register stage `stage` (8 words): a round's 8 values of x and the 8 of y they combine with."""
    x0, x1, x2, x3 = ptx.load_u32x4(x, at)
    y0, y1, y2, y3 = ptx.load_u32x4(y, at_y)
    xq[8 * stage], xq[8 * stage + 1], xq[8 * stage + 2], xq[8 * stage + 3] = x0, x1, x2, x3
    xq[8 * stage + 4], xq[8 * stage + 5], xq[8 * stage + 6], xq[8 * stage + 7] = y0, y1, y2, y3


LOG2E = np.float32(1.4426950408889634)


@L.inlined
def silu(g):
    """g / (1 + exp(-g)) with the fast exp2 and reciprocal: a few ulp of float32, below the fp16
    rounding that follows."""
    return g * ptx.rcp_approx(float32(1) + ptx.exp2_approx(-g * LOG2E))


@functools.lru_cache(maxsize=None)
def make_dot_round(combine: str, width: int):
    """dot_round for threads of `width` words and activations held as fp16 pairs ("none": 4 words
    a stage) or computed from two words each (8 a stage): "rmsnorm" x * norm weight, exact in
    float32 (the row's rms is applied to the sums at the end), "silu_mul"
    fp16(fp16(silu(gate)) * up), rounded as the model rounds."""
    x_words = 4 if combine == "none" else 8  # activation words a stage
    norm, gated = combine == "rmsnorm", combine == "silu_mul"

    @L.inlined
    def dot_round(wq, xq, stage, acc, xsum):
        """acc[c] += q_k[c] * x_k * 2**-49 over the 8 rows of register stage `stage`; xsum[0] += sum x_k."""
        for p in range(ROUND // 2):
            x_even, x_odd = ptx.halves(xq[x_words * stage + p])
            if norm or gated:  # constants: decided when the kernel is compiled
                y_even, y_odd = ptx.halves(xq[x_words * stage + 4 + p])
                if norm:
                    x_even, x_odd = x_even * y_even, x_odd * y_odd
                else:
                    x_even, x_odd = ptx.halves(ptx.pack_halves(silu(x_even), silu(x_odd)))
                    x_even, x_odd = ptx.halves(ptx.pack_halves(x_even * y_even, x_odd * y_odd))
            for u in range(2):
                xk = x_even if u == 0 else x_odd
                xsum[0] += xk
                xs0, xs1, xs2, xs3 = xk * X_SCALE[0], xk * X_SCALE[1], xk * X_SCALE[2], xk * X_SCALE[3]
                for wi in range(width):
                    lo = wq[width * (ROUND * stage + 2 * p + u) + wi]
                    hi = lo >> uint32(16)  # odd columns live in the high half
                    for m in range(4):
                        xs = xs0 if m == 0 else xs1 if m == 1 else xs2 if m == 2 else xs3
                        mask = NIBBLE << uint32(4 * m)
                        acc[8 * wi + 2 * m] += ptx.as_float(lo & mask) * xs
                        acc[8 * wi + 2 * m + 1] += ptx.as_float(hi & mask) * xs

    return dot_round


def load_activations(prologue: str):
    """How a round's activation words reach the register ring: from x ("none"), from x and the
    norm weight `aux` ("rmsnorm"), from the gate and up halves of x ("silu_mul")."""
    if prologue == "rmsnorm":
        @L.inlined
        def load(qweight, x, row, xq, stage, aux):
            load_x2(x, row // 2, aux, row // 2, xq, stage)
    elif prologue == "silu_mul":
        @L.inlined
        def load(qweight, x, row, xq, stage, aux):
            load_x2(x, row // 2, x, qweight.shape[0] // 2 + row // 2, xq, stage)
    else:
        @L.inlined
        def load(qweight, x, row, xq, stage, aux):
            load_x(x, row // 2, xq, stage)
    return load


def fill_step(i: int, load_weights, load):
    """Prologue step i: round i into stage i."""

    @L.inlined
    def fill(qweight, x, row0, words, chunk, wq, xq, acc, xsum, aux):
        load_weights(qweight, row0 + ROUND * i, words, chunk, wq, i)
        load(qweight, x, row0 + ROUND * i, xq, i, aux)

    return fill


def turn_step(i: int, rounds: int, depth: int, load_weights, load, dot_round):
    """Step i: load round i + depth - 1 into the stage round i - 1 left free, then compute round i."""
    ahead = i + depth - 1

    @L.inlined
    def turn(qweight, x, row0, words, chunk, wq, xq, acc, xsum, aux):
        if ahead < rounds:  # constants: decided when the kernel is compiled
            load_weights(qweight, row0 + ROUND * ahead, words, chunk, wq, ahead % depth)
            load(qweight, x, row0 + ROUND * ahead, xq, ahead % depth, aux)
        dot_round(wq, xq, i % depth, acc, xsum)

    return turn


@functools.lru_cache(maxsize=None)
def group_loader(width: int):
    """load_group for threads of `width` words."""
    load_zeros, load_scales = word_loader(width, False), word_loader(4, False)

    @L.inlined
    def load_group(qzeros, scales, g, words, chunk, zq, sq):
        """This thread's 8 * width zero points and scales of group g (needed only at the end of the run)."""
        load_zeros(qzeros, g * words + chunk * width, zq, 0)
        for i in range(width):  # a word's 8 fp16 scales are 4 words
            load_scales(scales, 4 * (g * words + chunk * width + i), sq, 4 * i)

    return load_group


@L.inlined
def block_sum(value, scratch, tid, nthreads):
    """The sum of `value` over the block's threads, in the same order in every block (call from all)."""
    if nthreads % 32 == 0:  # a constant: whole warps add up by shuffles, then the warps' sums
        for offset in (16, 8, 4, 2, 1):
            value += ptx.shfl_xor(value, offset)
        if tid % 32 == 0:
            scratch[tid // 32] = value
        cuda.syncthreads()
        total = float32(0)
        for w in range(nthreads // 32):
            total += scratch[w]
    else:  # blocks smaller than a warp (the simulator's small tests)
        scratch[tid] = value
        cuda.syncthreads()
        total = float32(0)
        for t in range(nthreads):
            total += scratch[t]
    return total


@L.inlined
def sum_of_squares(x, k, tid, nthreads, after):
    """This thread's share of sum x_k**2 over the fp16 row x ([k] as int32 pairs), 4 16-byte loads in
    flight at a time; `after` (0) orders the loads after the wait for the previous kernel."""
    total = float32(0)
    quads, stride = k // 8, nthreads
    for q in range(tid, quads, 4 * stride):
        for j in range(4):
            at = min(q + j * stride, quads - 1)
            a0, a1, a2, a3 = ptx.load_u32x4(x, 4 * at + after)
            part = float32(0)
            for a in (a0, a1, a2, a3):
                lo, hi = ptx.halves(a)
                part += lo * lo + hi * hi
            total += part if q + j * stride < quads else float32(0)
    return total


@functools.lru_cache(maxsize=None)
def make_kernel(tx: int, ty: int, rounds: int, depth: int, min_blocks: int = 1, width: int = 4,
                prologue: str = "none", residual: bool = False):
    """The GEMV for blocks of tx x ty threads (tx chunks of `width` words = 8 * width columns
    each, ty runs of `rounds` x 8 rows of K), streaming each run through `depth` register stages
    (depth - 1 rounds in flight).

    Fused variants (`make_kernel`'s last two arguments, fixed when compiled):
    - `prologue` "rmsnorm" multiplies rms_norm(x) * norm weight and "silu_mul" SiLU(gate) * up
      (x holds gate and up side by side). Each thread streams the two words of each activation
      through its ring and combines them as it computes (`make_dot_round`). For the norm it
      multiplies x * weight, and once its weights are in, the block adds up x**2 over the
      whole row (K fp16 values, from L2) and scales its sums by the rms: the row's rms is one
      number, so it can come last. (Computing the block's activations into shared memory
      before the rounds made every fused GEMV slower: docs/benchmarks.md.)
    - `residual`: the thread that writes an output adds residual[c] to it (after a split-K
      reduction, only the block that finishes a column tile writes it: the add happens once).
    """
    cols, scale_words = 8 * width, 4 * width  # columns per thread, and the words of their fp16 scales
    pitch = cols + 1  # one padded row of floats per thread in the reduction: conflict-free
    red_size = ty * tx * pitch
    rmsnorm = prologue == "rmsnorm"
    load, dot_round = load_activations(prologue), make_dot_round(prologue, width)
    load_weights, load_group = weight_loader(width), group_loader(width)
    fill = L.unrolled(lambda i: fill_step(i, load_weights, load), min(depth - 1, rounds))
    turn = L.unrolled(lambda i: turn_step(i, rounds, depth, load_weights, load, dot_round), rounds)
    run_rows, ring_words = ROUND * rounds, ROUND * width * depth
    ring_x = (4 if prologue == "none" else 8) * depth
    nthreads = tx * ty

    @L.kernel(threads=tx * ty, min_blocks=min_blocks)
    def gemv(x, aux, eps, res, qweight, qzeros, scales, group_size, partial, counters, out):
        # x: fp16 [K] ([2K] for silu_mul) as int32 pairs; aux: the norm weight, fp16 [K] as int32
        # pairs; res: the residual, fp16 [N] as int16; scales: fp16 [K/g, N] as int32 pairs; out: fp16 [N]
        words = qweight.shape[1]
        k = qweight.shape[0]
        n = words * 8
        tix, tiy = cuda.threadIdx.x, cuda.threadIdx.y
        tid = tiy * tx + tix
        chunk = cuda.blockIdx.x * tx + tix  # this thread owns words width*chunk .. + width - 1 of a row
        row0 = (cuda.blockIdx.y * ty + tiy) * run_rows  # ... and rows row0 .. row0 + run_rows - 1
        acc = cuda.local.array(cols, float32)
        wq = cuda.local.array(ring_words, uint32)
        xq = cuda.local.array(ring_x, uint32)
        xsum = cuda.local.array(1, float32)
        zq = cuda.local.array(width, uint32)
        sq = cuda.local.array(scale_words, uint32)
        scratch = cuda.shared.array(nthreads, float32)
        for c in range(cols):
            acc[c] = 0
        xsum[0] = 0
        # everything below may read what the previous kernel writes: wait for it (and load after it)
        after = ptx.wait_for_previous_grid()
        row0 += after
        active = chunk * width < words and row0 < k
        g = row0 // group_size  # the run lies inside one group
        if active:
            fill(qweight, x, row0, words, chunk, wq, xq, acc, xsum, aux)
            load_group(qzeros, scales, g, words, chunk, zq, sq)
        if active:  # (two blocks, as measured: ptxas schedules the ring differently for one)
            turn(qweight, x, row0, words, chunk, wq, xq, acc, xsum, aux)
            # this group's zero points and scales: s * (sum_k x_k q_k - z * sum_k x_k)
            for wi in range(width):
                for m in range(4):
                    s_even, s_odd = ptx.halves(sq[4 * wi + m])
                    z_even = float32((zq[wi] >> uint32(4 * m)) & NIBBLE)
                    z_odd = float32((zq[wi] >> uint32(4 * m + 16)) & NIBBLE)
                    acc[8 * wi + 2 * m] = s_even * (acc[8 * wi + 2 * m] * UNSCALE - z_even * xsum[0])
                    acc[8 * wi + 2 * m + 1] = s_odd * (acc[8 * wi + 2 * m + 1] * UNSCALE - z_odd * xsum[0])
        ptx.allow_next_grid()  # this block's weights are in: the next kernel may start launching
        rms = float32(1)
        if rmsnorm:  # x's rms over the whole row, now that this thread's weights are in
            total = block_sum(sum_of_squares(x, k, tid, nthreads, after), scratch, tid, nthreads)
            rms = float32(1) / math.sqrt(total / float32(k) + eps)
        # add the ty runs of this block ...
        red = cuda.shared.array(red_size, float32)
        for c in range(cols):
            red[tid * pitch + c] = acc[c]
        cuda.syncthreads()
        col0 = cuda.blockIdx.x * tx * cols
        splits = cuda.gridDim.y
        for p in range(tid, tx * cols, tx * ty):
            off = (p // cols) * pitch + p % cols
            total = float32(0)
            for j in range(ty):
                total += red[j * tx * pitch + off]
            if rmsnorm:
                total *= rms
            if col0 + p < n:
                if splits == 1:
                    out[col0 + p] = with_residual(total, res, col0 + p, residual)
                else:
                    partial[cuda.blockIdx.y * n + col0 + p] = total
        # ... and the blocks along K: the last block of this column tile finishes it
        if splits > 1 and splitk.last_to_arrive(counters, cuda.blockIdx.x, splits):
            for p in range(tid, tx * cols, tx * ty):
                if col0 + p < n:
                    out[col0 + p] = with_residual(splitk.sum_partials(partial, splits, n, col0 + p), res, col0 + p,
                                                  residual)

    return gemv


@L.inlined
def with_residual(total, res, c, residual):
    """total, or fp16(total) + res[c] (res: fp16 bits as int16) as torch adds two fp16 tensors: in
    float32, rounded to fp16 once more when stored."""
    if residual:
        y, _ = ptx.halves(ptx.pack_halves(total, float32(0)))
        r, _ = ptx.halves(uint32(res[c]) & uint32(0xFFFF))
        return y + r
    return total


def plan(n: int, k: int, group_size: int) -> tuple[int, int, int, int, int, int]:
    """(tx, ty, rounds, depth, min_blocks, width): runs of 4 rounds (32 rows) through 3 register
    stages, at least 2 blocks per SM, and
    - 16-byte loads (width 4): 4 chunks per block (8 on very wide layers) by 32 runs along K;
    - 4-byte loads (width 1) where that grid has at most one block per SM, or N is not a
      multiple of 32: 16 chunks of 8 columns by 16 runs, blocks of 256 threads with 8
      columns each instead of 32 (four times the threads for the same weights), and every
      round of a run in flight at once (a word per row leaves registers for it; on the o
      GEMV the same time as 3 stages within 0.05 us).

    From sweeps on an H200 (docs/benchmarks.md, GEMV sweep and "what bounds the int4 GEMV"):
    runs of 32 rows beat 16 (more loads in flight per thread) and 64 or 128 (too few threads
    for a layer of 4096 columns); 4 chunks per block beat 8 except on the widest layers. Two
    blocks per SM for 8 chunks too caps registers at 128: left free, ptxas gave the overlapped
    kernel 147 and one block of 256 threads per SM. With
    N = 4096, where 16-byte loads make 32, 64 and 128 blocks (K = 1024, 2048, 4096), 4-byte
    loads were 1.24-1.48x faster; at 256 blocks (K = 8192) 10% slower, and on the 7B layers
    with 344-384 blocks the best 4-byte tiles 14-28% slower (a thread's work on each
    activation, and the scaling of x for each nibble position, serve 8 columns instead of
    32). Runs shrink when the group is smaller than 32 rows.
    """
    rounds = 4
    while (group_size // ROUND) % rounds:
        rounds //= 2
    tx = 8 if n >= 16384 else 4
    tx = min(tx, max(1, n // 32))
    blocks = -(-n // (32 * tx)) * -(-k // (ROUND * rounds * 32))
    if blocks <= L.sm_count() or n % 32:
        return 16, 16, rounds, rounds + 1, 2, 1
    return tx, 32, rounds, 3, 2, 4


def w4a16_gemv(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
               group_size: int, out: torch.Tensor | None = None,
               tile: tuple[int, int, int, int, int, int] | None = None, *, prologue: str = "none",
               norm: torch.Tensor | None = None, eps: float = 1e-5,
               residual: torch.Tensor | None = None) -> torch.Tensor:
    """residual + activation(x) @ W.T for a single row x ([K] or [1, K], fp16; [2K] for
    prologue "silu_mul") and AWQ-packed int4 W: fp16 [..., N].

    `prologue` (`activation`): "none" multiplies x; "rmsnorm" rms_norm(x) * `norm` (fp16 [K],
    `eps`), the model's RMSNorm fused in; "silu_mul" SiLU(gate) * up for x = [gate, up].
    `residual` (fp16 [N]) is added to the result as torch adds two fp16 tensors. Needs N a
    multiple of a thread's columns (8 * width: the plan takes 4-byte loads where N % 32 != 0),
    group_size % 8 == 0 and 16-byte aligned tensors; `dispatch.w4a16_linear` falls back
    otherwise. `tile` = (tx, ty, rounds, depth, min_blocks, width) overrides `plan` (tests use
    tiny blocks in the simulator); a run of rounds x 8 rows must divide the group.
    """
    k, words = qweight.shape
    n = words * 8
    L.require(prologue in PROLOGUES, f"w4a16_gemv: prologue must be one of {PROLOGUES}, got {prologue!r}")
    width = 2 * k if prologue == "silu_mul" else k
    L.require(x.dtype == torch.float16 and x.numel() == width and x.is_contiguous(),
              f"w4a16_gemv wants a contiguous fp16 x with {width} elements, got {x.dtype} {tuple(x.shape)}")
    L.require(group_size % ROUND == 0 and k % group_size == 0,
              f"w4a16_gemv needs group_size % {ROUND} == 0 and K % group_size == 0, got g={group_size}, K={k}")
    L.require(qzeros.shape == (k // group_size, words) and scales.shape == (k // group_size, n),
              "w4a16_gemv: qzeros/scales shapes do not match qweight")
    L.require((norm is not None) == (prologue == "rmsnorm"), "w4a16_gemv: pass norm exactly with prologue 'rmsnorm'")
    for t, size in ((norm, k), (residual, n)):
        L.require(t is None or (t.dtype == torch.float16 and t.numel() == size),
                  f"w4a16_gemv: norm and residual must be fp16 of {k} and {n} elements")
    fused = [t for t in (norm, residual) if t is not None]
    for t in (x, qweight, qzeros, scales, *fused):
        L.require(t.is_contiguous() and t.data_ptr() % 16 == 0, "w4a16_gemv needs contiguous 16-byte aligned tensors")
    tx, ty, rounds, depth, min_blocks, width = tile or plan(n, k, group_size)
    L.require(width in WIDTHS, f"w4a16_gemv: a thread loads {WIDTHS} words per row, got {width}")
    L.require(n % (8 * width) == 0, f"w4a16_gemv needs N % {8 * width} == 0 ({4 * width}-byte loads), got N={n}")
    L.require(group_size % (ROUND * rounds) == 0,
              f"w4a16_gemv: runs of {ROUND * rounds} rows must divide the group size {group_size}")
    tiles, splits = -(-n // (8 * width * tx)), -(-k // (ROUND * rounds * ty))
    if out is None:
        out = torch.empty(*x.shape[:-1], n, dtype=torch.float16, device=x.device)
    partial = L.workspace("w4a16_gemv.partial", (max(splits, 2) * n,), torch.float32, x.device)
    counters = L.workspace("w4a16_gemv.counters", (tiles,), torch.int32, x.device)
    kernel = make_kernel(tx, ty, rounds, depth, min_blocks, width, prologue, residual is not None)
    flat = lambda t, dtype: t.view(-1).view(dtype)  # noqa: E731
    L.launch(kernel, (tiles, splits), (tx, ty), flat(x, torch.int32), flat(x if norm is None else norm, torch.int32),
             np.float32(eps), flat(out if residual is None else residual, torch.int16), qweight, qzeros,
             scales.view(torch.int32), group_size, partial, counters, out.view(-1), overlap=True)
    return out


def check(n: int = 96, k: int = 192, group_size: int = 64,
          tile: tuple[int, int, int, int, int, int] | None = (2, 2, 2, 2, 1, 4), seed: int | None = None,
          prologue: str = "none", residual: bool = False) -> float:
    """Run the kernel on fresh random inputs; return the relative error (raises if too large).

    Fused variants: against `reference` over the same fp16 inputs. An activation may differ
    from the model's by one fp16 step at each of its two roundings (relative 2 * 2 * u16 of
    that term, allowed for in the tolerance): rmsnorm skips both (it scales x * weight by the
    row's rms at the end), silu_mul's fast exp may land one of them on the other side. The
    residual add rounds the GEMV's result to fp16 first (u16 of it)."""
    if prologue == "none" and not residual:
        return measure.check_int4_linear(w4a16_gemv, 1, n, k, group_size, seed, tile=tile)
    from labkit.kernels.launch import device

    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    dev = device()
    qweight, qzeros, scales = random_int4_layer(n, k, group_size, dev, gen)
    width = 2 * k if prologue == "silu_mul" else k
    x = (torch.randn(width, generator=gen) * 2).half().to(dev)
    norm = (torch.rand(k, generator=gen) + 0.5).half().to(dev) if prologue == "rmsnorm" else None
    res = (torch.randn(n, generator=gen) * 4).half().to(dev) if residual else None
    w = dequantize_int4(qweight, qzeros, scales, group_size).double()
    a = activation(x, prologue, norm).double()
    y, abs_y = a @ w.t(), a.abs() @ w.abs().t()
    want = y if res is None else y + res.double()
    out = measure.poisoned((n,), torch.float16, dev)
    w4a16_gemv(x, qweight, qzeros, scales, group_size, out=out, tile=tile, prologue=prologue, norm=norm,
               residual=res)
    norm2 = lambda t: torch.linalg.vector_norm(t.double().cpu()).item()  # noqa: E731
    flips = 4 * measure.U16 if prologue != "none" else 0.0
    tol = (measure.dot_tolerance(k, want, abs_y) + flips * norm2(abs_y) / norm2(want)
           + (measure.U16 * norm2(y) / norm2(want) if residual else 0.0))
    return measure.assert_close(f"w4a16_gemv {prologue}{' + residual' if residual else ''} N={n} K={k} "
                                f"g={group_size}", out, want, tol)


def bench(n: int, k: int, group_size: int = 128) -> dict:
    """Time the kernel and fp16 torch.matmul on one layer shape (GPU only)."""
    row = measure.bench_int4_linear(w4a16_gemv, 1, n, k, group_size)
    return {**row, "shape": f"N={n} K={k} g={group_size}", "tile": list(plan(n, k, group_size))}
