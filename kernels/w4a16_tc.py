"""W4A16 on tensor cores: Y = X @ W.T for M = 1..8 rows of X, W AWQ-packed int4.

The CUDA-core kernels spend two (w4a16_gemv.py, one row) or more (w4a16_gemm.py: a convert,
then one fp32 multiply-add per row) instructions per weight. At batch 1 that is about half
the time the weights take to stream, so loads and arithmetic must overlap well to approach
the bandwidth limit, and at M = 8 the fp32 FMAs alone set the speed. This kernel moves the
multiply-adds to tensor cores and halves the dequantization:

- One `mma.sync.m16n8k16` multiplies a 16 x 16 tile of dequantized weights (16 output
  columns x 16 rows of K) by a 16 x 8 tile of X.T: up to 8 rows of X for the price of one,
  with fp32 accumulators. At M = 1 seven of the eight columns are wasted, which costs
  nothing that matters: the tensor cores are idle otherwise.
- The A operand wants, in each 32-bit register, two fp16 weights of one column at rows
  k, k + 1. A packed word holds 8 columns of one row, so a `prmt` interleaves the bytes of
  rows k and k + 1, and a `lop3` drops one nibble of each row into the mantissa of 1024
  (fp16 0x6400): two weights become fp16 (1024 + q) with one instruction.
- One `hfma2` removes the 1024 and the zero point exactly ((1024 + q) - (1024 + z)), one
  `hmul2` applies the scale: the fp16 weight (q - z) * s, rounded once, exactly as
  `dequantize_int4` computes it. About 1.75 instructions per weight in all.

Work layout: a warp owns 128 columns (8 lane groups x 2 words) and a range of 16-row slabs
of K; lane (g, t) loads words 2g, 2g + 1 of rows 2t, 2t + 1, 2t + 8, 2t + 9 of each slab,
which is what its A fragments need. It loads the next slab before computing this one
(two register stages), and a group's zero points and scales come with the slab that
starts the group. Warps of a block split K further and add up through shared memory;
blocks along K through a split-K workspace (splitk.py).
"""
from __future__ import annotations

import functools

import torch
from numba import cuda, float32, int64, uint32

from labkit.kernels import launch as L
from labkit.kernels import measure, ptx, splitk
from labkit.kernels.packing import dequantize_int4

SLAB = 16  # rows of K per mma
TILE = 64  # output columns per warp: 8 lane groups x one word (8 columns); a block's warps sit side by side
STAGE_WORDS = 6  # per lane and slab: 4 words of W and 2 of X
MAX_ROWS = 8  # rows of X: the mma's N dimension
FP16_1024 = uint32(0x64006400)  # (1024, 1024) in fp16: OR a nibble into its mantissa
LOW_NIBBLES = (uint32(0x000F000F), uint32(0x00F000F0))  # nibble at bit 0 / bit 4 of each half
ONE = (uint32(0x3C003C00), uint32(0x2C002C00))  # (1, 1) and (1/16, 1/16): undo a nibble at bit 4
MINUS_ONE = (uint32(0xBC00BC00), uint32(0xAC00AC00))  # their negatives


def reference(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
              group_size: int) -> torch.Tensor:
    """X @ W.T in float64 with W dequantized (to fp16, as the kernel does) from the packed tensors."""
    return x.double() @ dequantize_int4(qweight, qzeros, scales, group_size).double().t()


@L.inlined
def biased_pairs(a, b, out, base):
    """The 8 columns of words a (row k) and b (row k + 1) as fp16 pairs (1024 + q_k, 1024 + q_k+1).

    out[base + p] holds column 2p (p < 4, the word's low half) or 2(p - 4) + 1 (p >= 4, high half);
    for odd p the nibble sits at bit 4 of each half, so the pair is (1024 + 16 q_k, ...).
    Per 8 weights: 2 prmt (bytes of a and b interleaved), 2 shifts, 8 lop3.
    """
    low = ptx.prmt(a, b, 0x5410)  # bytes a0 a1 b0 b1: nibbles 0..3 (columns 0, 2, 4, 6)
    high = ptx.prmt(a, b, 0x7632)  # bytes a2 a3 b2 b3: nibbles 4..7 (columns 1, 3, 5, 7)
    for p in range(8):
        pair = low if p < 4 else high
        if p % 4 >= 2:
            pair = pair >> uint32(8)
        out[base + p] = ptx.lop3_and_or(pair, LOW_NIBBLES[p % 2], FP16_1024)


@L.inlined
def group_constants(raw, base, zc, sc):
    """From a group's zero word and 4 scale words (raw[base], raw[base + 1 : base + 5]) build,
    per column p of the lane's word (numbered as in biased_pairs): zc[p] = -(1024 + z) (or
    -(64 + z) for odd p) and sc[p] = (s, s)."""
    zb = cuda.local.array(8, uint32)
    biased_pairs(raw[base], raw[base], zb, 0)
    for p in range(8):
        zc[p] = ptx.hmul2(zb[p], MINUS_ONE[p % 2])
        s = raw[base + 1 + p % 4]  # columns 2j, 2j + 1 share scale word j
        sc[p] = ptx.prmt(s, s, 0x1010 if p < 4 else 0x3232)


@L.inlined
def load_slab(qweight, x, words, half_k, slab, word, t, xrow, valid, buf, stage):
    """Into buf[stage]: this lane's word of rows 2t, 2t + 1, 2t + 8, 2t + 9 of the slab, and
    its two words of X (the B fragment: X[row g, 2t:2t+2] and X[row g, 2t+8:2t+10])."""
    for r in range(4):
        k = slab * SLAB + 2 * t + r % 2 + 8 * (r // 2)
        buf[STAGE_WORDS * stage + r] = ptx.load_u32(qweight, k * words + word) if valid else uint32(0)
    xk = xrow * half_k + slab * (SLAB // 2) + t
    buf[STAGE_WORDS * stage + 4] = ptx.load_u32(x, xk)
    buf[STAGE_WORDS * stage + 5] = ptx.load_u32(x, xk + 4)


@L.inlined
def load_group(qzeros, scales, group, words, word, valid, raw):
    """This lane's zero word and 4 scale words (8 columns) of `group`, into raw[0:5] for an even
    group and raw[5:10] for an odd one (two groups can be in flight, never three)."""
    if group & 1 == 0:
        load_group_at(qzeros, scales, group, words, word, valid, raw, 0)
    else:
        load_group_at(qzeros, scales, group, words, word, valid, raw, 5)


@L.inlined
def build_group(raw, group, zc, sc):
    """zc, sc of `group` from its words in raw (see load_group)."""
    if group & 1 == 0:
        group_constants(raw, 0, zc, sc)
    else:
        group_constants(raw, 5, zc, sc)


@L.inlined
def load_group_at(qzeros, scales, group, words, word, valid, raw, base):
    if valid:
        raw[base] = ptx.load_u32(qzeros, group * words + word)
        s0, s1, s2, s3 = ptx.load_u32x4(scales, (group * words + word) * 4)
        raw[base + 1], raw[base + 2], raw[base + 3], raw[base + 4] = s0, s1, s2, s3
    else:
        for i in range(5):
            raw[base + i] = 0


@L.inlined
def mma_slab(buf, stage, zc, sc, acc):
    """acc += the lane's part of W_slab @ X_slab.T: 4 mmas of 16 columns x 16 rows of K."""
    q = cuda.local.array(16, uint32)
    for h in range(2):  # rows (2t, 2t + 1), then (2t + 8, 2t + 9)
        biased_pairs(buf[STAGE_WORDS * stage + 2 * h], buf[STAGE_WORDS * stage + 2 * h + 1], q, 8 * h)
    for j in range(4):  # mma j: A rows g and g + 8 are the word's columns 2j and 2j + 1
        a = cuda.local.array(4, uint32)
        for h in range(2):
            for e in range(2):
                p = j + 4 * e
                a[2 * h + e] = ptx.hmul2(ptx.hfma2(q[8 * h + p], ONE[p % 2], zc[p]), sc[p])  # (q - z) * s
        acc[4 * j], acc[4 * j + 1], acc[4 * j + 2], acc[4 * j + 3] = ptx.mma_16816(
            a[0], a[1], a[2], a[3], buf[STAGE_WORDS * stage + 4], buf[STAGE_WORDS * stage + 5],
            acc[4 * j], acc[4 * j + 1], acc[4 * j + 2], acc[4 * j + 3])


# A lane's loop state, kept in one small local array so that the unrolled steps below share
# one signature (the array lives in registers: every index is a constant).
WORDS, HALF_K, WORD, T, XROW, VALID, SHIFT, MASK, S0, S1, S = range(11)
CTL_SIZE = 11


def fill_stage(stage: int):
    """Prologue step `stage`: slab s0 + stage into register stage `stage` (and its group's words)."""

    @L.inlined
    def fill(qweight, x, qzeros, scales, ctl, buf, raw, zc, sc, acc):
        slab = ctl[S0] + stage
        if slab < ctl[S1]:
            load_slab(qweight, x, ctl[WORDS], ctl[HALF_K], slab, ctl[WORD], ctl[T], ctl[XROW], ctl[VALID],
                      buf, stage)
            if stage > 0 and slab & ctl[MASK] == 0:
                load_group(qzeros, scales, slab >> ctl[SHIFT], ctl[WORDS], ctl[WORD], ctl[VALID], raw)

    return fill


def turn_stage(stage: int, depth: int):
    """Step `stage` of a turn of the ring: load slab s + stage + depth - 1 into the stage just
    freed, then compute slab s + stage from register stage `stage`."""
    ahead_stage = (stage + depth - 1) % depth

    @L.inlined
    def turn(qweight, x, qzeros, scales, ctl, buf, raw, zc, sc, acc):
        here = ctl[S] + stage
        ahead = here + depth - 1
        if here < ctl[S1]:
            if ahead < ctl[S1]:
                load_slab(qweight, x, ctl[WORDS], ctl[HALF_K], ahead, ctl[WORD], ctl[T], ctl[XROW], ctl[VALID],
                          buf, ahead_stage)
                if ahead & ctl[MASK] == 0:  # a group's constants travel with its first slab
                    load_group(qzeros, scales, ahead >> ctl[SHIFT], ctl[WORDS], ctl[WORD], ctl[VALID], raw)
            if here & ctl[MASK] == 0 and here != ctl[S0]:
                build_group(raw, here >> ctl[SHIFT], zc, sc)
            mma_slab(buf, stage, zc, sc, acc)

    return turn


@functools.lru_cache(maxsize=None)
def make_kernel(rows: int, warps: int, depth: int, min_blocks: int = 1):
    """The kernel for `rows` rows of X, blocks of `warps` warps along K, and `depth` register
    stages (depth - 1 slabs in flight while one is computed)."""
    buf_words = STAGE_WORDS * depth
    width = warps * TILE  # the block's columns
    fill = L.unrolled(lambda stage: fill_stage(stage), depth - 1)
    turn = L.unrolled(lambda stage: turn_stage(stage, depth), depth)

    @L.kernel(threads=32 * warps, min_blocks=min_blocks)
    def w4a16_tc(x, qweight, qzeros, scales, group_shift, partial, counters, out):
        # x: fp16 [rows, K] as int32 pairs; scales: fp16 [K/g, N] as int32 pairs; out: fp16 [rows, N]
        k_rows, words = qweight.shape
        n, half_k = words * 8, k_rows // 2
        lane, wi = cuda.threadIdx.x, cuda.threadIdx.y
        g, t = lane // 4, lane % 4
        word = (cuda.blockIdx.x * warps + wi) * (TILE // 8) + g  # this lane's columns: 8 * word .. + 7
        valid = word < words
        xrow = min(g, rows - 1)  # B column g is row g of X (columns past M repeat the last row)
        per_group = 1 << group_shift  # slabs per group (a power of two: no divisions in the loop)
        slabs = k_rows // SLAB
        splits = cuda.gridDim.y
        span = -(-slabs // splits)
        s0 = cuda.blockIdx.y * span
        s1 = min(s0 + span, slabs)

        acc = cuda.local.array(16, float32)
        buf = cuda.local.array(buf_words, uint32)
        raw = cuda.local.array(10, uint32)  # two groups' zero and scale words, by group parity
        zc = cuda.local.array(8, uint32)
        sc = cuda.local.array(8, uint32)
        ctl = cuda.local.array(CTL_SIZE, int64)
        ctl[WORDS], ctl[HALF_K], ctl[WORD], ctl[T], ctl[XROW] = words, half_k, word, t, xrow
        ctl[VALID], ctl[SHIFT], ctl[MASK] = valid, group_shift, per_group - 1
        for i in range(16):
            acc[i] = 0
        # everything below may read what the previous kernel writes: wait for it (and load after it)
        s0 += ptx.wait_for_previous_grid()
        ptx.allow_next_grid()
        ctl[S0], ctl[S1], ctl[S] = s0, s1, s0
        if s0 < s1:
            load_group(qzeros, scales, s0 >> group_shift, words, word, valid, raw)
            fill(qweight, x, qzeros, scales, ctl, buf, raw, zc, sc, acc)  # depth - 1 slabs in flight
            build_group(raw, s0 >> group_shift, zc, sc)
        while ctl[S] < s1:
            turn(qweight, x, qzeros, scales, ctl, buf, raw, zc, sc, acc)  # depth slabs computed
            ctl[S] += depth

        # lane (g, t) holds D[g, 2t:2t+2] and D[g+8, 2t:2t+2] of mma j: columns 2j, 2j + 1 x rows of X
        # (staged through shared memory so that the block writes whole rows of its columns)
        red = cuda.shared.array((rows, width), float32)
        for i in range(16):
            m = 2 * t + i % 2
            if m < rows:
                red[m, wi * TILE + 8 * g + 2 * (i // 4) + (i // 2) % 2] = acc[i]
        cuda.syncthreads()
        tid = wi * 32 + lane
        col0 = cuda.blockIdx.x * width
        for i in range(tid, rows * width, 32 * warps):
            m, c = i // width, i % width
            total = red[m, c]
            if col0 + c < n:
                if splits == 1:
                    out[m * n + col0 + c] = total
                else:
                    partial[(cuda.blockIdx.y * rows + m) * n + col0 + c] = total
        if splits > 1 and splitk.last_to_arrive(counters, cuda.blockIdx.x, splits):
            for i in range(tid, rows * width, 32 * warps):
                m, c = i // width, i % width
                if col0 + c < n:
                    out[m * n + col0 + c] = splitk.sum_partials(partial, splits, rows * n, m * n + col0 + c)

    return w4a16_tc


def plan(m: int, n: int, k: int, group_size: int) -> tuple[int, int, int, int]:
    """(warps, splits, depth, min_blocks): blocks of 4 warps side by side along N (4 x 32 bytes:
    each row of a slab is read as whole 128-byte lines), registers capped for 4 blocks per SM,
    and as many blocks along K as make one full wave of them (each with at least 2 slabs):
    a wave and a quarter ran much slower than one wave. 7 slabs in flight per
    warp (fewer for small groups: at most two groups' constants may be pending)."""
    warps, slabs = 4, k // SLAB
    tiles = -(-n // (TILE * warps))
    splits = max(1, min(slabs // 2, 4 * L.sm_count() // tiles))
    return warps, splits, min(8, group_size // SLAB + 1), 4


def w4a16_tc(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
             group_size: int, out: torch.Tensor | None = None,
             tile: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """X @ W.T for fp16 X [M, K] (M <= 8) and AWQ-packed int4 W: fp16 [M, N].

    Needs a power-of-two group_size >= 32 and K % group_size == 0; `tile` = (warps, splits, depth,
    min_blocks) overrides `plan`.
    """
    k, words = qweight.shape
    n = words * 8
    L.require(x.dim() == 2 and x.shape[1] == k and x.dtype == torch.float16 and x.is_contiguous(),
              f"w4a16_tc wants a contiguous fp16 X [M, {k}], got {x.dtype} {tuple(x.shape)}")
    m = x.shape[0]
    L.require(1 <= m <= MAX_ROWS, f"w4a16_tc takes 1..{MAX_ROWS} rows, got {m}")
    L.require(group_size >= 32 and group_size & (group_size - 1) == 0 and k % group_size == 0,
              f"w4a16_tc needs a power-of-two group_size >= 32 dividing K, got g={group_size}, K={k}")
    L.require(qzeros.shape == (k // group_size, words) and scales.shape == (k // group_size, n),
              "w4a16_tc: qzeros/scales shapes do not match qweight")
    for t in (x, qweight, qzeros, scales):
        L.require(t.is_contiguous() and t.data_ptr() % 16 == 0, "w4a16_tc needs contiguous 16-byte aligned tensors")
    warps, splits, depth, min_blocks = tile or plan(m, n, k, group_size)
    L.require(depth - 1 <= group_size // SLAB, f"w4a16_tc: depth {depth} keeps more than 2 groups in flight")
    tiles = -(-n // (TILE * warps))
    if out is None:
        out = torch.empty(m, n, dtype=torch.float16, device=x.device)
    partial = L.workspace("w4a16_tc.partial", (max(splits, 2) * MAX_ROWS * n,), torch.float32, x.device)
    counters = L.workspace("w4a16_tc.counters", (tiles,), torch.int32, x.device)
    L.launch(make_kernel(m, warps, depth, min_blocks), (tiles, splits), (32, warps), x.view(torch.int32), qweight, qzeros,
             scales.view(torch.int32), (group_size // SLAB).bit_length() - 1, partial, counters, out.view(-1),
             overlap=True)
    return out


def check(m: int = 3, n: int = 144, k: int = 160, group_size: int = 32,
          tile: tuple[int, int, int, int] | None = (2, 2, 3, 1), seed: int | None = None) -> float:
    """Run the kernel on fresh random inputs; return the relative error (raises if too large)."""
    return measure.check_int4_linear(w4a16_tc, m, n, k, group_size, seed, tile=tile)


def bench(m: int, n: int, k: int, group_size: int = 128) -> dict:
    """Time the kernel and fp16 torch.matmul for M rows on one layer shape (GPU only)."""
    row = measure.bench_int4_linear(w4a16_tc, m, n, k, group_size)
    return {**row, "tile": list(plan(m, n, k, group_size))}
