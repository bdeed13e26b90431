"""W4A16 on tensor cores: Y = X @ W.T for M = 1..32 rows of X, W AWQ-packed int4.

The CUDA-core kernels spend two (w4a16_gemv.py, one row) or more (w4a16_gemm.py: a convert,
then one fp32 multiply-add per row) instructions per weight. At batch 1 that is about half
the time the weights take to stream, so loads and arithmetic must overlap well to approach
the bandwidth limit, and at M = 8 the fp32 FMAs alone set the speed. This kernel moves the
multiply-adds to tensor cores and halves the dequantization:

- One `mma.sync.m16n8k16` multiplies a 16 x 16 tile of dequantized weights (16 output
  columns x 16 rows of K) by a 16 x 8 tile of X.T: up to 8 rows of X for the price of one,
  with fp32 accumulators. At M = 1 seven of the eight columns are wasted, which costs
  nothing that matters: the tensor cores are idle otherwise. Up to 32 rows run as 4 such
  B tiles against the same dequantized A fragments: the weights are loaded and
  dequantized once per launch, whatever M.
- The A operand wants, in each 32-bit register, two fp16 weights of one column at rows
  k, k + 1. A packed word holds 8 columns of one row, so a `prmt` interleaves the bytes of
  rows k and k + 1, and a `lop3` drops one nibble of each row into the mantissa of 1024
  (fp16 0x6400): two weights become fp16 (1024 + q) with one instruction.
- One `hfma2` removes the 1024 and the zero point exactly ((1024 + q) - (1024 + z)), one
  `hmul2` applies the scale: the fp16 weight (q - z) * s, rounded once, exactly as
  `dequantize_int4` computes it. About 1.75 instructions per weight in all.

Work layout: a warp owns 64 columns (8 lane groups x 1 word) and a range of 16-row slabs
of K; lane (g, t) loads word g of rows 2t, 2t + 1, 2t + 8, 2t + 9 of each slab, which is
what its A fragments need. It keeps depth - 1 slabs in flight in a ring of register
stages while it computes one, and a group's zero points and scales come with the slab
that starts the group. A block's warps sit side by side along N or split K among
themselves and add up through shared memory, one after the other; blocks along K add up
through a split-K workspace (splitk.py).
"""
from __future__ import annotations

import functools

import torch
from numba import cuda, float32, int64, uint32

from labkit.kernels import launch as L
from labkit.kernels import measure, ptx, splitk
from labkit.kernels.packing import dequantize_int4

SLAB = 16  # rows of K per mma
TILE = 64  # output columns per warp: 8 lane groups x one word (8 columns)
ROWS_PER_MMA = 8  # rows of X per mma (its N dimension): a B tile
MAX_ROWS = 32  # rows of X per launch: 4 B tiles share each dequantized A fragment
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


# A lane's loop state, kept in one small local array so that the unrolled steps below share
# one signature (the array lives in registers: every index is a constant). X0 + b: where
# the lane's words of X start for B tile b (rows 8b .. 8b + 7 of X).
WORDS, WORD, T, VALID, SHIFT, MASK, S0, S1, S, X0 = range(10)
CTL_SIZE = X0 + MAX_ROWS // ROWS_PER_MMA


@functools.lru_cache(maxsize=None)
def slab_steps(tiles: int):
    """(load_slab, mma_slab) for `tiles` B tiles of 8 rows of X: the weights of a slab are
    loaded and dequantized once and multiplied with every tile."""
    stage_words = 4 + 2 * tiles

    @L.inlined
    def load_slab(qweight, x, ctl, slab, buf, stage):
        """Into buf[stage]: this lane's word of rows 2t, 2t + 1, 2t + 8, 2t + 9 of the slab, and
        per B tile its two words of X (the B fragment: X[row, 2t:2t+2] and X[row, 2t+8:2t+10])."""
        for r in range(4):
            k = slab * SLAB + 2 * ctl[T] + r % 2 + 8 * (r // 2)
            buf[stage_words * stage + r] = ptx.load_u32(qweight, k * ctl[WORDS] + ctl[WORD]) if ctl[VALID] \
                else uint32(0)
        for b in range(tiles):
            xk = ctl[X0 + b] + slab * (SLAB // 2)
            buf[stage_words * stage + 4 + 2 * b] = ptx.load_u32(x, xk)
            buf[stage_words * stage + 5 + 2 * b] = ptx.load_u32(x, xk + 4)

    @L.inlined
    def mma_slab(buf, stage, zc, sc, acc):
        """acc += the lane's part of W_slab @ X_slab.T: 4 mmas of 16 columns x 16 rows of K per tile."""
        q = cuda.local.array(16, uint32)
        for h in range(2):  # rows (2t, 2t + 1), then (2t + 8, 2t + 9)
            biased_pairs(buf[stage_words * stage + 2 * h], buf[stage_words * stage + 2 * h + 1], q, 8 * h)
        for j in range(4):  # mma j: A rows g and g + 8 are the word's columns 2j and 2j + 1
            a = cuda.local.array(4, uint32)
            for h in range(2):
                for e in range(2):
                    p = j + 4 * e
                    a[2 * h + e] = ptx.hmul2(ptx.hfma2(q[8 * h + p], ONE[p % 2], zc[p]), sc[p])  # (q - z) * s
            for b in range(tiles):
                i = 16 * b + 4 * j
                acc[i], acc[i + 1], acc[i + 2], acc[i + 3] = ptx.mma_16816(
                    a[0], a[1], a[2], a[3], buf[stage_words * stage + 4 + 2 * b],
                    buf[stage_words * stage + 5 + 2 * b], acc[i], acc[i + 1], acc[i + 2], acc[i + 3])

    return load_slab, mma_slab


def fill_stage(stage: int, tiles: int):
    """Prologue step `stage`: slab s0 + stage into register stage `stage` (and its group's words)."""
    load_slab, _ = slab_steps(tiles)

    @L.inlined
    def fill(qweight, x, qzeros, scales, ctl, buf, raw, zc, sc, acc):
        slab = ctl[S0] + stage
        if slab < ctl[S1]:
            load_slab(qweight, x, ctl, slab, buf, stage)
            if stage > 0 and slab & ctl[MASK] == 0:
                load_group(qzeros, scales, slab >> ctl[SHIFT], ctl[WORDS], ctl[WORD], ctl[VALID], raw)

    return fill


def turn_stage(stage: int, depth: int, tiles: int):
    """Step `stage` of a turn of the ring: load slab s + stage + depth - 1 into the stage just
    freed, then compute slab s + stage from register stage `stage`."""
    ahead_stage = (stage + depth - 1) % depth
    load_slab, mma_slab = slab_steps(tiles)

    @L.inlined
    def turn(qweight, x, qzeros, scales, ctl, buf, raw, zc, sc, acc):
        here = ctl[S] + stage
        ahead = here + depth - 1
        if here < ctl[S1]:
            if ahead < ctl[S1]:
                load_slab(qweight, x, ctl, ahead, buf, ahead_stage)
                if ahead & ctl[MASK] == 0:  # a group's constants travel with its first slab
                    load_group(qzeros, scales, ahead >> ctl[SHIFT], ctl[WORDS], ctl[WORD], ctl[VALID], raw)
            if here & ctl[MASK] == 0 and here != ctl[S0]:
                build_group(raw, here >> ctl[SHIFT], zc, sc)
            mma_slab(buf, stage, zc, sc, acc)

    return turn


@functools.lru_cache(maxsize=None)
def make_kernel(tiles: int, warps_n: int, warps_k: int, depth: int, min_blocks: int = 1):
    """The kernel for up to 8 * `tiles` rows of X; blocks of warps_n x warps_k warps (side by
    side along N, then along K), `depth` register stages (depth - 1 slabs in flight while one
    is computed)."""
    warps = warps_n * warps_k
    buf_words = (4 + 2 * tiles) * depth
    acc_words, red_rows = 16 * tiles, ROWS_PER_MMA * tiles  # array sizes must be constants
    width = warps_n * TILE  # the block's columns
    fill = L.unrolled(lambda stage: fill_stage(stage, tiles), depth - 1)
    turn = L.unrolled(lambda stage: turn_stage(stage, depth, tiles), depth)

    @L.kernel(threads=32 * warps, min_blocks=min_blocks)
    def w4a16_tc(x, qweight, qzeros, scales, rows, group_shift, partial, counters, out):
        # x: fp16 [rows, K] as int32 pairs; scales: fp16 [K/g, N] as int32 pairs; out: fp16 [rows, N]
        k_rows, words = qweight.shape
        n, half_k = words * 8, k_rows // 2
        lane, wi = cuda.threadIdx.x, cuda.threadIdx.y
        wn, wk = wi % warps_n, wi // warps_n
        g, t = lane // 4, lane % 4
        word = (cuda.blockIdx.x * warps_n + wn) * (TILE // 8) + g  # this lane's columns: 8 * word .. + 7
        per_group = 1 << group_shift  # slabs per group (a power of two: no divisions in the loop)
        slabs = k_rows // SLAB
        splits = cuda.gridDim.y
        span = -(-slabs // splits)  # the block's slabs, then this warp's share of them
        b0 = cuda.blockIdx.y * span
        b1 = min(b0 + span, slabs)
        share = -(-max(b1 - b0, 0) // warps_k)
        s0 = b0 + wk * share
        s1 = min(s0 + share, b1)

        acc = cuda.local.array(acc_words, float32)
        buf = cuda.local.array(buf_words, uint32)
        raw = cuda.local.array(10, uint32)  # two groups' zero and scale words, by group parity
        zc = cuda.local.array(8, uint32)
        sc = cuda.local.array(8, uint32)
        ctl = cuda.local.array(CTL_SIZE, int64)
        ctl[WORDS], ctl[WORD], ctl[T], ctl[VALID] = words, word, t, word < words
        ctl[SHIFT], ctl[MASK] = group_shift, per_group - 1
        for b in range(tiles):  # B column g of tile b is row 8b + g of X (rows past M repeat the last)
            ctl[X0 + b] = min(8 * b + g, rows - 1) * half_k + t
        for i in range(16 * tiles):
            acc[i] = 0
        # everything below may read what the previous kernel writes: wait for it (and load after it)
        s0 += ptx.wait_for_previous_grid()
        ptx.allow_next_grid()
        ctl[S0], ctl[S1], ctl[S] = s0, s1, s0
        if s0 < s1:
            load_group(qzeros, scales, s0 >> group_shift, words, word, ctl[VALID], raw)
            fill(qweight, x, qzeros, scales, ctl, buf, raw, zc, sc, acc)  # depth - 1 slabs in flight
            build_group(raw, s0 >> group_shift, zc, sc)
        while ctl[S] < s1:
            turn(qweight, x, qzeros, scales, ctl, buf, raw, zc, sc, acc)  # depth slabs computed
            ctl[S] += depth

        # lane (g, t) holds D[g, 2t:2t+2] and D[g+8, 2t:2t+2] of mma j: columns 2j, 2j + 1 x rows
        # of tile b. The warps along K add up in shared memory, one after the other (the same
        # order every time: deterministic), and the block writes whole rows of its columns.
        red = cuda.shared.array((red_rows, width), float32)
        for turn_k in range(warps_k):
            if wk == turn_k:
                for b in range(tiles):
                    for i in range(16):
                        m = 8 * b + 2 * t + i % 2
                        if m < rows:
                            c = wn * TILE + 8 * g + 2 * (i // 4) + (i // 2) % 2
                            red[m, c] = acc[16 * b + i] if turn_k == 0 else red[m, c] + acc[16 * b + i]
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


def plan(m: int, n: int, k: int, group_size: int, warps_n: int | None = None) -> tuple[int, int, int, int, int]:
    """(warps_n, warps_k, splits, depth, min_blocks) for M rows on an N x K layer.

    Blocks of 4 warps. They split K inside the block (adding up in shared memory), so that
    fewer blocks split it through the workspace, whose M x N partial sums per split grow
    with M; unless the columns alone, one warp's 64 per block, make more than a wave of
    blocks: then the 4 warps sit side by side along N (each row of a slab read as whole
    128-byte lines) and blocks along K fill the wave. Each warp gets at least 2 slabs, and
    a wave and a quarter ran much slower than one wave. The accumulators grow by 16
    registers per B tile, so more tiles take fewer stages in flight and fewer blocks per
    SM; at most two groups' constants may be pending. `warps_n` (1, 2 or 4) overrides
    the layout.
    """
    tiles = -(-m // ROWS_PER_MMA)
    depth, min_blocks = {1: (8, 4), 2: (5, 3)}.get(tiles, (3, 2))
    wave = min_blocks * L.sm_count()
    warps_n = warps_n or (1 if -(-n // TILE) <= wave else 4)
    warps_k = 4 // warps_n
    col_tiles = -(-n // (TILE * warps_n))
    splits = max(1, min(k // SLAB // (2 * warps_k), wave // col_tiles))
    return warps_n, warps_k, splits, min(depth, group_size // SLAB + 1), min_blocks


def require_inputs(name: str, x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                   group_size: int) -> int:
    """M, the rows of X, once the inputs are what the tensor-core kernels take (else ValueError)."""
    k, words = qweight.shape
    L.require(x.dim() == 2 and x.shape[1] == k and x.dtype == torch.float16 and x.is_contiguous(),
              f"{name} wants a contiguous fp16 X [M, {k}], got {x.dtype} {tuple(x.shape)}")
    m = x.shape[0]
    L.require(1 <= m <= MAX_ROWS, f"{name} takes 1..{MAX_ROWS} rows, got {m}")
    L.require(group_size >= 32 and group_size & (group_size - 1) == 0 and k % group_size == 0,
              f"{name} needs a power-of-two group_size >= 32 dividing K, got g={group_size}, K={k}")
    L.require(qzeros.shape == (k // group_size, words) and scales.shape == (k // group_size, words * 8),
              f"{name}: qzeros/scales shapes do not match qweight")
    for t in (x, qweight, qzeros, scales):
        L.require(t.is_contiguous() and t.data_ptr() % 16 == 0, f"{name} needs contiguous 16-byte aligned tensors")
    return m


def w4a16_tc(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
             group_size: int, out: torch.Tensor | None = None,
             tile: tuple[int, int, int, int, int] | None = None) -> torch.Tensor:
    """X @ W.T for fp16 X [M, K] (M <= 32) and AWQ-packed int4 W: fp16 [M, N].

    Needs a power-of-two group_size >= 32 and K % group_size == 0; `tile` = (warps_n, warps_k,
    splits, depth, min_blocks) overrides `plan`.
    """
    m = require_inputs("w4a16_tc", x, qweight, qzeros, scales, group_size)
    k, words = qweight.shape
    n = words * 8
    warps_n, warps_k, splits, depth, min_blocks = tile or plan(m, n, k, group_size)
    L.require(depth - 1 <= group_size // SLAB, f"w4a16_tc: depth {depth} keeps more than 2 groups in flight")
    tiles = -(-m // ROWS_PER_MMA)
    col_tiles = -(-n // (TILE * warps_n))
    if out is None:
        out = torch.empty(m, n, dtype=torch.float16, device=x.device)
    partial = L.workspace("w4a16_tc.partial", (max(splits, 2) * ROWS_PER_MMA * tiles * n,), torch.float32, x.device)
    counters = L.workspace("w4a16_tc.counters", (col_tiles,), torch.int32, x.device)
    L.launch(make_kernel(tiles, warps_n, warps_k, depth, min_blocks), (col_tiles, splits), (32, warps_n * warps_k),
             x.view(torch.int32), qweight, qzeros, scales.view(torch.int32), m, (group_size // SLAB).bit_length() - 1,
             partial, counters, out.view(-1), overlap=True)
    return out


def check(m: int = 3, n: int = 144, k: int = 160, group_size: int = 32,
          tile: tuple[int, int, int, int, int] | None = (2, 1, 2, 3, 1), seed: int | None = None) -> float:
    """Run the kernel on fresh random inputs; return the relative error (raises if too large)."""
    return measure.check_int4_linear(w4a16_tc, m, n, k, group_size, seed, tile=tile)


def bench(m: int, n: int, k: int, group_size: int = 128) -> dict:
    """Time the kernel and fp16 torch.matmul for M rows on one layer shape (GPU only)."""
    row = measure.bench_int4_linear(w4a16_tc, m, n, k, group_size)
    return {**row, "tile": list(plan(m, n, k, group_size))}
