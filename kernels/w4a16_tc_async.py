"""W4A16 on tensor cores, the weights staged in shared memory: Y = X @ W.T for up to 32 rows.

The multiply-adds and the dequantization are those of w4a16_tc.py (`mma.sync.m16n8k16` on
A fragments dequantized with one `lop3` per two weights, up to 4 B tiles of 8 rows sharing
each dequantized fragment); this file changes how the weights get to the registers. A
memory-bound kernel needs many bytes in flight per SM (the bandwidth times the memory
latency: tens of KB). w4a16_tc.py loads them into a ring of registers, 4 bytes a lane, and
that ring shrinks as the accumulators grow with M (16 registers per B tile): at 32 rows it
streamed the weights at a small fraction of the copy bandwidth (docs/benchmarks.md). Here:

- Asynchronous 16-byte copies (`cp.async`, ptx.py) from global into a ring of `stages`
  slots of shared memory. A copy in flight holds no register: the ring's size, not the
  accumulators, sets the bytes in flight. A stage is 16 * warps_k * per_warp rows of K by
  the block's 64 * warps_n columns; each thread copies per_warp 16-byte chunks of its
  weights, and the threads share the stage's rows of X and, where a group starts, its zero
  points and scales; each thread commits its copies as one group. Before computing stage s,
  each thread waits until at most stages - 2 of its groups are in flight and the block meets
  at a barrier: stage s has landed, and the slot of stage s - 1 is free for stage s + stages - 1.
- A thread computes the byte addresses of its chunks once (`ptx.address`) and adds a stage's
  bytes after each issue. Computed from indices at every copy (Numba's 64-bit index
  arithmetic, the selects of the bounds), the copies took more instructions than the
  dequantization and the mmas of a slab (the SASS and Nsight Compute's counts are in
  docs/benchmarks.md): this kernel issues instructions, it does not wait on bytes.
- Fragments are read back from shared memory: lane (g, t) reads word g of rows 2t, 2t + 1,
  2t + 8, 2t + 9 of its slab (what its A fragments need), and `ldmatrix` gives each lane
  its words of X for two B tiles at once (lanes point at rows of X, 16 bytes of K each). All
  through 32-bit byte addresses that a thread computes once from `ptx.shared_address` and
  moves by constants, which ptxas folds into the instructions (Numba's 64-bit indexing, with
  its check for negative indices, took more instructions than the reads). Each row is
  padded by 16 bytes, so that the 32 lanes of a read, or the 8 rows of an `ldmatrix`, hit 32
  different banks.
- The K reduction inside the block: the warps_k warps of a column range take per_warp
  consecutive slabs of each stage (more work between two barriers), and add up through
  shared memory at the end (the ring's memory, one warp after the other: a fixed order,
  deterministic). Blocks along K add up through a split-K workspace (splitk.py) only where
  the column ranges alone leave SMs idle.
- A group's zero points and scales travel with the stage that starts it (and with the
  block's first stage), and a warp rebuilds its constants only when its slab enters a new
  group.

What it buys (docs/benchmarks.md): a layer's linears ran faster than with w4a16_tc.py at
every row count from 2 to 32 on the Llama-2-7B shapes (1.16x at 2 rows, 1.75x at 32), so the
dispatcher takes it for 2-32 rows. What bounds it is the instructions a warp issues per slab,
not the bytes (Nsight Compute: ~260 per warp and 512-byte slab at 32 rows, 16% occupancy).
Shared memory through byte addresses and `ldmatrix` (with loop counters kept in 32 bits) took
22-30% of the main loop's instructions away (ptxas for sm_90, counted with tools/sass_loop.py:
518 -> 363 per stage of two slabs at 32 rows) and 6-12% of the time. Past that, Nsight
Compute's stall sampling at 32 rows puts the warps at their own dependency chains (shared
reads -> dequantization -> mma) and at the stage's barrier, with 2-2.6 warps per scheduler; a
deeper ring of the same stages bought at most 6-9%. One group check per stage and a
split-K tail that reads 4 outputs' partial sums at once took another 2-4%. Where 2 x 4 warps
take 17-32 rows, 4 slabs per warp and stage (half the barriers for the same work) in a ring
of 39 KB slots took 8% off a layer's linears at 24 rows and 5% at 32; a ring that large lives
in dynamic shared memory (`pool` is `cuda.shared.array(0, ...)`, and `launch.launch` allows
a kernel more than 48 KB). Fewer instructions per stage no longer help: a copy loop 25
instructions shorter (9% of a stage at 32 rows) moved nothing. Against fp16 cuBLAS on an
H200: 0.68-0.74x at 2-8 rows, 0.91x at 16, 1.06x at 24, 1.20x at 32.
"""
from __future__ import annotations

import functools

import torch
from numba import cuda, float32, int32, uint32, uint64

from labkit.kernels import launch as L
from labkit.kernels import measure, ptx, splitk
from labkit.kernels.w4a16_tc import (MAX_ROWS, ONE, ROWS_PER_MMA, SLAB, TILE, biased_pairs, group_constants,
                                     require_inputs)
from labkit.kernels.w4a16_tc import reference  # noqa: F401  (the product is w4a16_tc's: the same reference)

PAD = 4  # words (16 bytes) after each row in shared memory: conflict-free fragment reads
STAGES_UP_TO = 8  # ring slots a plan takes at most
RING_BYTES = 47 * 1024  # the most a ring of 2-slab stages takes: deeper ones measured slower (see plan)
TAIL = 4  # outputs a thread of the last block along K adds up at once


@functools.lru_cache(maxsize=None)
def ring(tiles: int, warps_n: int, warps_k: int, per_warp: int = 1) -> dict[str, int]:
    """Where things sit in one slot of the shared-memory ring, in 4-byte words.

    A slot holds the stage's weights (16 * warps_k * per_warp rows of the block's 8 * warps_n
    words, each row padded), its rows of X (8 per B tile, each row's halves of the stage
    padded), and the zero-point and scale words of the groups it spans (group sizes >= 32
    rows). `reduce` is what the K reduction needs (8 rows per B tile by the block's columns,
    fp32, each row padded by a word: the lanes of a store hit 16 banks, not 4) once the ring
    is drained."""
    words, rows_k = 8 * warps_n, SLAB * warps_k * per_warp
    w_stride, x_stride, groups = words + PAD, rows_k // 2 + PAD, max(1, rows_k // 32)
    x_at = rows_k * w_stride
    z_at = x_at + ROWS_PER_MMA * tiles * x_stride
    s_at = z_at + groups * words
    return {"w_stride": w_stride, "x_stride": x_stride, "x_at": x_at, "z_at": z_at, "s_at": s_at,
            "slot": s_at + groups * 4 * words, "reduce": ROWS_PER_MMA * tiles * (TILE * warps_n + 1)}


def shared_words(tiles: int, warps_n: int, warps_k: int, stages: int, per_warp: int = 1) -> int:
    """Words of shared memory a block uses: the ring, or the K reduction after it."""
    r = ring(tiles, warps_n, warps_k, per_warp)
    return max(stages * r["slot"], r["reduce"])


@functools.lru_cache(maxsize=None)
def make_kernel(tiles: int, warps_n: int, warps_k: int, stages: int, min_blocks: int = 1, per_warp: int = 1):
    """The kernel for up to 8 * `tiles` rows of X; blocks of warps_n x warps_k warps (side by
    side along N, then along K), a ring of `stages` slots (stages - 1 stages in flight while
    one is computed), `per_warp` slabs of 16 rows of K per warp and stage."""
    threads = 32 * warps_n * warps_k
    words, rows_k, width = 8 * warps_n, SLAB * warps_k * per_warp, TILE * warps_n  # the block's columns per stage
    r = ring(tiles, warps_n, warps_k, per_warp)
    w_stride, x_stride, x_at, z_at, s_at, slot_words = (r[key] for key in ("w_stride", "x_stride", "x_at", "z_at",
                                                                            "s_at", "slot"))
    acc_words, b_words = 16 * tiles, 2 * tiles  # (local array sizes must be constants)
    chunks_w, chunks_x = words // 4, rows_k // 8  # 16-byte chunks in a row of weights / of X per stage
    chunks_group = chunks_w + words  # a group's zero words, then its scale words (4 per weight word)
    groups_max = max(1, rows_k // 32)
    # copies per thread and stage (constant trip counts): weights, X, the groups' constants
    w_turns, x_turns = per_warp, -(-ROWS_PER_MMA * tiles * chunks_x // threads)
    group_turns = -(-groups_max * chunks_group // threads)
    wait_ring = ptx.cp_async_wait(stages - 2)  # stage s landed: the later ones may be in flight
    wait_all = ptx.cp_async_wait(0)
    x_pair, x_last = ptx.ldmatrix(4), ptx.ldmatrix(2)  # B fragments of two tiles / of an odd last one
    pairs, x_reads = tiles // 2, -(-tiles // 2)
    align = ptx.SHARED_ALIGN  # (Numba needs the alignment as a constant of the closure)
    slot_bytes, slab_bytes = 4 * slot_words, 4 * SLAB * w_stride  # (in a slot: a warp's next slab)
    slabs_per_stage = warps_k * per_warp
    tail_words = 8 * TAIL  # the partial sums of TAIL outputs, 8 splits at a time

    @L.inlined
    def issue(slot, k0, w_src, w_dst, w_end, x_src, x_dst, x_end):
        """Start copying the stage whose first row of K is k0 into the slot at byte address `slot`:
        the thread's chunks of weights and of X from their addresses (`w_src`, `x_src`: this
        stage's) to theirs in a slot (`w_dst`, `x_dst`), each valid while k0 is below the chunk's
        `end` (a chunk past the layer's columns or the rows of X has end 0: a chunk of X past the
        rows is not copied at all)."""
        for u in range(w_turns):
            ptx.cp_async16(slot + w_dst[u], w_src[u], k0 < w_end[u])
        for u in range(x_turns):
            if x_end[u] > 0:
                ptx.cp_async16(slot + x_dst[u], x_src[u], k0 < x_end[u])

    @L.inlined
    def issue_groups(slot, k0, groups_k, group_log2, g_src, g_step, g_dst, g_gi):
        """Start copying the zero-point or scale chunks (g_src: of group 0; g_step bytes per
        group) of the groups the stage from row k0 spans (rare: computed here)."""
        for u in range(group_turns):
            if g_gi[u] < max(1, rows_k >> group_log2):
                group = (k0 >> group_log2) + g_gi[u]
                ok = group < groups_k
                ptx.cp_async16(slot + g_dst[u], g_src[u] + uint64(group * g_step[u] if ok else 0), ok)

    @L.inlined
    def mma_slab(w, xa, x_off, zc, sc, acc):
        """acc += the lane's part of W_slab @ X_slab.T: 4 mmas of 16 columns x 16 rows of K per
        B tile. w: the byte address of the lane's word in row 0 of its slab; xa: its row
        addresses for the B fragments, to which x_off adds the slot's and the slab's bytes."""
        q = cuda.local.array(16, uint32)
        for h in range(2):  # rows (2t, 2t + 1), then (2t + 8, 2t + 9)
            biased_pairs(ptx.ld_shared_u32(w + 32 * h * w_stride), ptx.ld_shared_u32(w + 4 * (8 * h + 1) * w_stride),
                         q, 8 * h)
        xb = cuda.local.array(b_words, uint32)  # b0, b1 of tile 0, then of tile 1, ...
        for p in range(pairs):
            xb[4 * p], xb[4 * p + 1], xb[4 * p + 2], xb[4 * p + 3] = x_pair(xa[p] + x_off)
        if tiles % 2:
            xb[b_words - 2], xb[b_words - 1] = x_last(xa[pairs] + x_off)
        for j in range(4):  # mma j: A rows g and g + 8 are the word's columns 2j and 2j + 1
            a = cuda.local.array(4, uint32)
            for h in range(2):
                for e in range(2):
                    p = j + 4 * e
                    a[2 * h + e] = ptx.hmul2(ptx.hfma2(q[8 * h + p], ONE[p % 2], zc[p]), sc[p])  # (q - z) * s
            for b in range(tiles):
                i = 16 * b + 4 * j
                acc[i], acc[i + 1], acc[i + 2], acc[i + 3] = ptx.mma_16816(
                    a[0], a[1], a[2], a[3], xb[2 * b], xb[2 * b + 1], acc[i], acc[i + 1], acc[i + 2], acc[i + 3])

    @L.kernel(threads=threads, min_blocks=min_blocks)
    def w4a16_tc_async(x, qweight, qzeros, scales, rows, group_log2, partial, counters, out):
        # x: fp16 [rows, K] as int32 pairs; scales: fp16 [K/g, N] as int32 pairs; out: fp16 [rows, N]
        k_rows, n_words = qweight.shape
        n = n_words * 8
        lane, wi = cuda.threadIdx.x, cuda.threadIdx.y
        tid = wi * 32 + lane
        wn, wk = wi % warps_n, wi // warps_n
        g, t = lane // 4, lane % 4
        word0 = cuda.blockIdx.x * words
        slabs = int32(k_rows // SLAB)
        splits = cuda.gridDim.y
        stages_k = -(-k_rows // rows_k)  # stages along all of K (the last one may be partial) ...
        span = -(-stages_k // splits)  # ... and the block's share of them
        st0 = cuda.blockIdx.y * span
        st1 = min(st0 + span, stages_k)

        pool = cuda.shared.array(0, uint32, align)  # dynamic: shared_words(...) words, more than 48 KB allows
        base = ptx.shared_address(pool)
        acc = cuda.local.array(acc_words, float32)
        raw = cuda.local.array(5, uint32)  # a group's zero word and 4 scale words
        zc = cuda.local.array(8, uint32)
        sc = cuda.local.array(8, uint32)
        # Lane 8j + r gives the address of row r of matrix j of an ldmatrix: matrices 2i and 2i + 1
        # are rows 8b .. 8b + 7 of X (b = 2p + i) at K 0..7 and 8..15 of the slab: b0 and b1 of B
        # tile b (rows past M repeat the last).
        xa = cuda.local.array(x_reads, int32)
        for p in range(x_reads):
            m = min(8 * (2 * p + lane // 16) + lane % 8, rows - 1)
            xa[p] = base + 4 * (x_at + m * x_stride + 8 * wk * per_warp + 4 * ((lane // 8) % 2))
        for i in range(acc_words):
            acc[i] = 0
        # everything below may read what the previous kernel writes: wait for it (and load after it)
        st0 += ptx.wait_for_previous_grid()
        ptx.allow_next_grid()

        # The thread's copies, as byte addresses at the block's first stage (advanced by a
        # stage's bytes after each issue) and in a slot: chunks of weights (row i // chunks_w
        # of the stage), of X (row m, halves 8c...), of the groups' constants.
        w_src = cuda.local.array(w_turns, uint64)
        w_dst = cuda.local.array(w_turns, int32)
        w_end = cuda.local.array(w_turns, int32)
        for u in range(w_turns):
            row, col = (tid + u * threads) // chunks_w, word0 + 4 * ((tid + u * threads) % chunks_w)
            w_end[u] = k_rows - row if col < n_words else 0
            w_src[u] = ptx.address(qweight, (st0 * rows_k + row) * n_words + col if w_end[u] > 0 else 0)
            w_dst[u] = base + 4 * (row * w_stride + col - word0)
        x_src = cuda.local.array(x_turns, uint64)
        x_dst = cuda.local.array(x_turns, int32)
        x_end = cuda.local.array(x_turns, int32)
        for u in range(x_turns):
            m, c = (tid + u * threads) // chunks_x, (tid + u * threads) % chunks_x
            x_end[u] = k_rows - 8 * c if m < rows else 0
            x_src[u] = ptx.address(x, m * (k_rows >> 1) + (st0 * rows_k >> 1) + 4 * c if m < rows else 0)
            x_dst[u] = base + 4 * (x_at + m * x_stride + 4 * c)
        g_src = cuda.local.array(group_turns, uint64)
        g_step = cuda.local.array(group_turns, int32)
        g_dst = cuda.local.array(group_turns, int32)
        g_gi = cuda.local.array(group_turns, int32)  # the group within the stage (groups_max: none)
        for u in range(group_turns):
            gi, c = (tid + u * threads) // chunks_group, (tid + u * threads) % chunks_group
            if c < chunks_w:  # zero points: 8 columns a word
                ok = word0 + 4 * c < n_words
                g_src[u] = ptx.address(qzeros, word0 + 4 * c if ok else 0)
                g_step[u], g_dst[u] = 4 * n_words, base + 4 * (z_at + gi * words + 4 * c)
            else:  # scales: 2 columns a word, 4 words per weight word
                c -= chunks_w
                ok = word0 + c < n_words
                g_src[u] = ptx.address(scales, 4 * (word0 + c) if ok else 0)
                g_step[u], g_dst[u] = 16 * n_words, base + 4 * (s_at + gi * 4 * words + 4 * c)
            g_gi[u] = gi if ok and gi < groups_max else groups_max
        w_stage, x_stage = uint64(rows_k * n_words * 4), uint64(rows_k * 2)  # bytes per stage
        groups_k = k_rows >> group_log2
        group_rows = int32((1 << group_log2) - 1)

        for s in range(stages - 1):
            if st0 + s < st1:
                k0 = int32((st0 + s) * rows_k)
                issue(int32(s * slot_bytes), k0, w_src, w_dst, w_end, x_src, x_dst, x_end)
                if s == 0 or k0 & group_rows == 0:  # the block's first stage, or a group starts
                    issue_groups(int32(s * slot_bytes), k0, groups_k, group_log2, g_src, g_step, g_dst, g_gi)
                for u in range(w_turns):
                    w_src[u] += w_stage
                for u in range(x_turns):
                    x_src[u] += x_stage
            ptx.cp_async_commit()  # (an empty group past the end: every thread counts the same groups)
        at, ahead_at = int32(0), int32((stages - 1) * slot_bytes)  # the slots of stage st and st + stages - 1
        w = base + 4 * ((SLAB * per_warp * wk + 2 * t) * w_stride + wn * 8 + g)  # the lane's word, first slab
        slab_log2 = int32(group_log2 - 4)  # slabs per group: 2 ** slab_log2 (a warp's slabs only go up)
        next_group = int32(0)  # the first slab of the group after the warp's current one
        k_ahead = int32((st0 + stages - 1) * rows_k)  # the first row of K of stage st + stages - 1
        slab0 = int32((st0 * warps_k + wk) * per_warp)  # the warp's first slab of stage st
        for st in range(st0, st1):
            wait_ring()
            cuda.syncthreads()
            if k_ahead < int32(st1 * rows_k):
                issue(ahead_at, k_ahead, w_src, w_dst, w_end, x_src, x_dst, x_end)
                if k_ahead & group_rows == 0:
                    issue_groups(ahead_at, k_ahead, groups_k, group_log2, g_src, g_step, g_dst, g_gi)
                for u in range(w_turns):
                    w_src[u] += w_stage
                for u in range(x_turns):
                    x_src[u] += x_stage
            ptx.cp_async_commit()
            if slab0 < slabs:  # the warp's per_warp slabs lie in one group: its constants once per stage
                if slab0 >= next_group:  # the slabs start a group (or are the warp's first): its constants
                    group = int32((slab0 * SLAB) >> group_log2)
                    next_group = int32((group + 1) << slab_log2)
                    gi = group - int32((st * rows_k) >> group_log2)
                    raw[0] = ptx.ld_shared_u32(at + base + 4 * (z_at + gi * words + wn * 8 + g))
                    sw = at + base + 4 * (s_at + gi * 4 * words + (wn * 8 + g) * 4)
                    for e in range(4):
                        raw[1 + e] = ptx.ld_shared_u32(sw + 4 * e)
                    group_constants(raw, 0, zc, sc)
                if slab0 + per_warp <= slabs:  # no branch between the slabs: ptxas may overlap them
                    for j in range(per_warp):
                        mma_slab(at + w + j * slab_bytes, xa, at + 32 * j, zc, sc, acc)
                else:  # the last stage of a K that is not a multiple of the stage's rows
                    for j in range(per_warp):
                        if slab0 + j < slabs:
                            mma_slab(at + w + j * slab_bytes, xa, at + 32 * j, zc, sc, acc)
            ahead_at = at
            at = int32(at + slot_bytes if at + slot_bytes < stages * slot_bytes else 0)
            k_ahead = int32(k_ahead + rows_k)
            slab0 = int32(slab0 + slabs_per_stage)
        wait_all()
        cuda.syncthreads()  # the ring is drained: its memory holds the K reduction now

        # lane (g, t) holds D[g, 2t:2t+2] and D[g+8, 2t:2t+2] of mma j: columns 2j, 2j + 1 x rows
        # of tile b. The warps along K add up in shared memory, one after the other (the same
        # order every time: deterministic), and the block writes whole rows of its columns.
        for turn in range(warps_k):
            if wk == turn:
                for b in range(tiles):
                    for i in range(16):
                        cell = (8 * b + 2 * t + i % 2) * (width + 1) + wn * TILE + 8 * g + 2 * (i // 4) + (i // 2) % 2
                        total = acc[16 * b + i] if turn == 0 else ptx.as_float(pool[cell]) + acc[16 * b + i]
                        pool[cell] = ptx.float_bits(total)
            cuda.syncthreads()
        col0 = cuda.blockIdx.x * width
        for i in range(tid, rows * width, threads):
            m, c = i // width, i % width
            if col0 + c < n:
                if splits == 1:
                    out[m * n + col0 + c] = ptx.as_float(pool[m * (width + 1) + c])
                else:
                    partial[(cuda.blockIdx.y * rows + m) * n + col0 + c] = ptx.as_float(pool[m * (width + 1) + c])
        if splits > 1 and splitk.last_to_arrive(counters, cuda.blockIdx.x, splits):
            v = cuda.local.array(tail_words, float32)
            totals = cuda.local.array(TAIL, float32)
            outs = cuda.local.array(TAIL, int32)  # where each output goes (-1: the thread has none there)
            for i0 in range(tid, rows * width, TAIL * threads):  # TAIL outputs a turn: their sums read, then added
                for u in range(TAIL):
                    i = i0 + u * threads
                    m, c = i // width, i % width
                    outs[u] = m * n + col0 + c if i < rows * width and col0 + c < n else -1
                    totals[u] = 0
                for s0 in range(0, splits, 8):
                    for u in range(TAIL):
                        if outs[u] >= 0:
                            splitk.read_eight(partial, splits, s0, rows * n, outs[u], v, 8 * u)
                    for u in range(TAIL):
                        totals[u] = splitk.add_eight(v, 8 * u, splits - s0, totals[u])
                for u in range(TAIL):
                    if outs[u] >= 0:
                        out[outs[u]] = totals[u]

    return w4a16_tc_async


LAYOUTS = ((1, 4), (2, 4))  # (warps_n, warps_k): the layouts `plan` picks from (the bench times both)
PER_WARP = (2, 4)  # slabs per warp and stage: the choices `plan` picks from (the bench times both)


def plan(m: int, n: int, k: int, group_size: int, layout: tuple[int, int] | None = None,
         per_warp: int | None = None) -> tuple[int, int, int, int, int, int]:
    """(warps_n, warps_k, splits, stages, min_blocks, per_warp) for M rows on an N x K layer.

    The warps of a block split K among themselves (X is re-read from L2 once per block of
    columns, so narrow blocks along N re-read it often: at 32 rows, 2 x 4 warps on layers no
    wider than deep, N <= K, and 1 x 4 on the wide ones measured fastest among five layouts;
    from 17 rows, 2 x 4 also where its blocks of 128 columns alone fit one wave: q/k/v took 36.7
    us at 32 rows against 42.4 with 1 x 4, while gate/up's 172 blocks at one per SM took 71.8
    against 52.8); as many blocks per SM as the registers allow (128 per thread up to 2 B tiles,
    168 from 3: bounded to 128, 3 tiles measured slower); blocks along K fill a wave where the
    column ranges alone do not, each with at least 2 stages.

    Slabs per warp and stage: 2 (one barrier, one wait and one round of copies for twice the
    work of one: faster on every layer shape), in a ring of at most RING_BYTES (deeper rings of
    2-slab stages measured up to 9% slower). And 4 where 2 x 4 warps take 3-4 B tiles (17-32 rows,
    groups of 64 rows or more): such a block runs alone on its SM (168 registers a thread), and 4
    slabs between barriers, in as many 39 KB slots as a block may have (dynamic shared memory,
    up to STAGES_UP_TO, no more than its stages + 1), took 12-18% off q/k/v and 7-13% off down
    at 24-32 rows on an H200 (docs/benchmarks.md). `layout` = (warps_n, warps_k) and `per_warp`
    override the plan's.
    """
    tiles = -(-m // ROWS_PER_MMA)
    one_wave = tiles >= 3 and -(-n // (2 * TILE)) <= L.sm_count()  # 2 x 4's blocks at one per SM
    warps_n, warps_k = layout or ((2, 4) if n <= k or one_wave else (1, 4))
    four = (warps_n, warps_k) == (2, 4) and tiles >= 3 and 4 * SLAB <= group_size  # (a warp's slabs: one group)
    per_warp = per_warp or (4 if four else 2)
    min_blocks = max(1, 65536 // (32 * warps_n * warps_k * (128 if tiles <= 2 else 168)))  # 64K registers per SM
    col_tiles = -(-n // (TILE * warps_n))
    total = -(-k // (SLAB * warps_k * per_warp))
    splits = max(1, min(total // 2, min_blocks * L.sm_count() // col_tiles))
    budget = shared_bytes_per_block(min_blocks) if per_warp == 4 else RING_BYTES
    fit = budget // 4 // ring(tiles, warps_n, warps_k, per_warp)["slot"]
    stages = min(STAGES_UP_TO, fit, -(-total // splits) + 1)  # (more slots than a block's stages + 1: idle)
    return warps_n, warps_k, splits, stages, min_blocks, per_warp


def shared_bytes_per_block(blocks: int) -> int:
    """The shared memory each of `blocks` blocks on one SM may take: its share of the SM, less
    the 1 KB the GPU keeps per block and 1 KB for split-K's flag and alignment, at most what
    one block may ask for."""
    per_sm, per_block = L.shared_memory()
    return min(per_block - 1024, per_sm // blocks - 2048)


def w4a16_tc_async(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                   group_size: int, out: torch.Tensor | None = None,
                   tile: tuple[int, int, int, int, int, int] | None = None) -> torch.Tensor:
    """X @ W.T for fp16 X [M, K] (M <= 32) and AWQ-packed int4 W: fp16 [M, N].

    Needs N % 32 == 0 (16-byte copies of whole words), a power-of-two group_size >= 32 and
    K % group_size == 0; `tile` = (warps_n, warps_k, splits, stages, min_blocks, per_warp)
    overrides `plan`.
    """
    m = require_inputs("w4a16_tc_async", x, qweight, qzeros, scales, group_size)
    k, words = qweight.shape
    n = words * 8
    L.require(n % 32 == 0, f"w4a16_tc_async needs N % 32 == 0 (16-byte copies of 4 words), got N={n}")
    tiles = -(-m // ROWS_PER_MMA)
    L.require(tile is None or len(tile) == 6,
              f"w4a16_tc_async: tile is (warps_n, warps_k, splits, stages, min_blocks, per_warp), got {tile}")
    warps_n, warps_k, splits, stages, min_blocks, per_warp = tile or plan(m, n, k, group_size)
    L.require(warps_k in (1, 2, 4, 8) and warps_n * warps_k <= 8 and stages >= 2 and per_warp in (1, 2, 4),
              f"w4a16_tc_async: warps_k must be 1, 2, 4 or 8, at most 8 warps, at least 2 stages, per_warp "
              f"1, 2 or 4; got {tile}")
    L.require(SLAB * per_warp <= group_size,
              f"w4a16_tc_async: a warp's {per_warp} slabs of a stage must lie in one group of {group_size} rows")
    shared, most = 4 * shared_words(tiles, warps_n, warps_k, stages, per_warp), shared_bytes_per_block(1)
    L.require(shared <= most, f"w4a16_tc_async: {stages} stages of {tile} need {shared} bytes of shared memory, "
                              f"more than a block may have ({most})")
    col_tiles = -(-n // (TILE * warps_n))
    if out is None:
        out = torch.empty(m, n, dtype=torch.float16, device=x.device)
    partial = L.workspace("w4a16_tc_async.partial", (max(splits, 2) * ROWS_PER_MMA * tiles * n,), torch.float32,
                          x.device)
    counters = L.workspace("w4a16_tc_async.counters", (col_tiles,), torch.int32, x.device)
    L.launch(make_kernel(tiles, warps_n, warps_k, stages, min_blocks, per_warp), (col_tiles, splits),
             (32, warps_n * warps_k), x.view(torch.int32), qweight, qzeros, scales.view(torch.int32), m,
             group_size.bit_length() - 1, partial, counters, out.view(-1), overlap=True, shared_bytes=shared)
    return out


def check(m: int = 3, n: int = 160, k: int = 160, group_size: int = 32,
          tile: tuple[int, int, int, int, int, int] | None = (2, 2, 2, 3, 1, 1), seed: int | None = None) -> float:
    """Run the kernel on fresh random inputs; return the relative error (raises if too large)."""
    return measure.check_int4_linear(w4a16_tc_async, m, n, k, group_size, seed, tile=tile)


def bench(m: int, n: int, k: int, group_size: int = 128) -> dict:
    """Time the kernel and fp16 torch.matmul for M rows on one layer shape (GPU only)."""
    row = measure.bench_int4_linear(w4a16_tc_async, m, n, k, group_size)
    return {**row, "tile": list(plan(m, n, k, group_size))}
