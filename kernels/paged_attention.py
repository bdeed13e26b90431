"""Paged attention for decode: one new query per sequence against its K/V blocks.

The cache is cut into blocks of `block_size` tokens; a sequence's blocks sit anywhere in
the pool and `block_tables[b]` lists them in order (docs/internals.md). Decode attention
reads every cached K and V once and does ~4 flops per byte, so, like the GEMV, it is
good when it streams the cache at close to copy bandwidth. How this kernel gets there:

- One thread block per (sequence, KV head, partition). With grouped-query attention the
  block handles every query head that shares the KV head, so K/V are read once.
- Lanes split the head dimension: each lane holds E = 8 elements of a token's K row (one
  16-byte load of fp16), LPT = head_dim / 8 lanes cover a token, and a warp reads
  32 / LPT whole tokens (512 contiguous bytes for head_dim 128) per load instruction.
- Each warp takes whole KV blocks, issues every K and V load of a tile before using any,
  and keeps its own running max and sum (online softmax), so warps never wait for each
  other until the end, where they merge through shared memory.
- Split-K (flash-decoding): a long context is cut into partitions handled by different
  blocks; each writes its unnormalized output, max and sum, and the last block of a
  (sequence, head group) to finish merges them (the ticket counter of `splitk`). This is
  what fills the GPU at batch 1 with 32k tokens, where one block per KV head would leave
  most SMs idle. The merge stays inside the launch: one launch per layer instead of two,
  and faster than a second merging kernel (docs/benchmarks.md, "Split-K merge"); a
  sequence whose context fits one partition writes its output directly.

- With `NewTokens` (the engine's decode steps) the kernel also does the work of the two
  kernels that ran before it in every layer: it rotates q and the step's new K (the rotary
  embedding, one shuffle per pair of elements D/2 apart), writes the new K/V into the cache
  (as codes, for int8/int4 caches), and attends to the new token from registers (one more
  tile for warp 0 of the partition that holds it; no block reads the row it writes).

- Launched overlapped (`launch.launch(overlap=True)`, where enabled), the kernel is resident
  while the q/k/v GEMV drains and waits for it before reading anything; it lets the o GEMV
  start launching at once, so that GEMV prefetches its weights during the attention.

Scores are computed as exp2(q.k * scale * log2 e - max): the scale folds into q once.
The same kernel reads int8/int4 caches (kv_quant.py): `bits` picks how a lane unpacks its
8 elements, and the per-token scale/zero are applied to whole dot products, not elements.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from numba import cuda, float32, uint32
from numba.types import float16

from labkit.kernels import launch as L
from labkit.kernels import measure, ptx, splitk
from labkit.kernels.w4a16_gemv import MAGIC, MAGIC_F

E = 8  # head_dim elements per lane
NEG = np.float32(-1e30)  # "minus infinity" that stays finite under fast math
LOG2E = 1.4426950408889634
BYTE = np.uint32(0xFF)
NIBBLE = np.uint32(0xF)
MAX_PARTS = 128  # partitions per sequence at most: the merge keeps one weight per (head, partition) in shared memory
MERGE_LOADS = 8  # partitions whose partial outputs a thread of the merge loads at once


# ----------------------------------------------------------------------------- reference

def gather_kv(cache: torch.Tensor, block_table: torch.Tensor, length: int) -> torch.Tensor:
    """The first `length` tokens of one sequence from a paged cache: [length, H_kv, D]."""
    block_size = cache.shape[2]
    blocks = block_table[: -(-length // block_size)].long()
    return cache[blocks].transpose(1, 2).reshape(-1, cache.shape[1], cache.shape[3])[:length]


def reference(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
              context_lens: torch.Tensor, scale: float | None = None,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Decode attention in torch, one sequence at a time: q [B, H, D] -> [B, H, D] in `dtype`.

    Works on CPU tensors (the engine's torch backend can call it) and is the reference
    the kernels are checked against (with dtype=float64).
    """
    scale = scale if scale is not None else q.shape[-1] ** -0.5
    out = []
    for b in range(q.shape[0]):
        n = int(context_lens[b])
        k = gather_kv(k_cache, block_tables[b], n).to(dtype).transpose(0, 1)  # [H_kv, n, D]
        v = gather_kv(v_cache, block_tables[b], n).to(dtype).transpose(0, 1)
        qb = q[b].to(dtype).unsqueeze(1)  # [H, 1, D]
        out.append(F.scaled_dot_product_attention(qb, k, v, scale=scale,
                                                  enable_gqa=q.shape[1] != k.shape[0]).squeeze(1))
    return torch.stack(out)


# ----------------------------------------------------------------------------- kernels

def heads_per_block(group: int) -> int:
    """Query heads one block serves: the largest divisor of the GQA group up to 4 (registers)."""
    return max(h for h in (1, 2, 3, 4) if group % h == 0)


def code_units(bits: int) -> tuple:
    """What `unpack` returns for element e, in units of the element: codes are masked in
    place (no shifts), so a byte at bit 8 reads as 256 x its value and a nibble at bit 4m
    as 16**m x its value. Queries are pre-divided, sums of V post-divided, by these."""
    if bits == 16:
        return tuple(np.float32(1) for e in range(E))
    per = 2 if bits == 8 else 4
    return tuple(np.float32(2.0 ** (bits * (e % per))) for e in range(E))


@functools.lru_cache(maxsize=None)
def make_kernel(head_dim: int, block_size: int, heads: int, bits: int, warps: int, steps: int = 4,
                min_blocks: int = 0, rope: bool = False):
    """Attention for `heads` query heads per block over a cache of `bits`-bit elements.

    A warp works on tiles of `steps` load steps (32 / LPT tokens each); while it computes
    on one tile, the loads of the next are already in flight (two register buffers).
    `rope`: q and the step's new K come unrotated, and the new K/V are not in the cache yet
    (see `NewTokens`).
    """
    lpt = head_dim // E  # lanes per token: lpt lanes of E elements each hold one token's K (or V) row
    tpw = 32 // lpt  # tokens per warp load step: the warp reads tpw whole rows per load instruction
    steps = min(steps, max(1, block_size // tpw))
    tiles = -(-block_size // (steps * tpw))  # tiles per KV block
    wpl = E * bits // 32  # 32-bit words per lane per token: 4 (fp16), 2 (int8), 1 (int4)
    row_words = head_dim * bits // 32  # 32-bit words of one token's row of one head
    quantized = bits != 16
    unit = code_units(bits)
    hx = heads * E  # a lane's query (and output) registers: its E elements of each head
    hs = heads * steps  # a lane's score registers: one per head and load step of a tile
    kv_words = steps * wpl  # a lane's K (and V) words of one tile
    smem_heads = warps * heads  # one running max and sum per (warp, head) in shared memory
    smem_acc = warps * heads * head_dim  # one partial output row per (warp, head)
    quads = heads * head_dim // 4  # the merge reads partial outputs 4 floats (16 bytes) at a time
    slices = min(warps, max(1, 32 * warps // quads))  # threads per quad, each over every slices-th partition
    merge_weights, merge_words = heads * MAX_PARTS, 4 * MERGE_LOADS
    partner = lpt // 2  # rotary pairs element i with i + D/2: lane lt's partner is lane lt ^ partner
    per_word = 32 // bits  # elements per 32-bit word of the cache
    qmax = np.float32(2**bits - 1)

    @cuda.jit(device=True, inline="always")
    def rotate(words, cos, sin, row, lt):
        """The lane's 8 elements of a head (4 words of fp16 pairs) at the position of token
        `row`, rotated: x cos + rotate_half(x) sin in float32, rounded to fp16 (as the model's
        compiled step computes it). Every lane of the warp calls it (a shuffle)."""
        cw = cuda.local.array(4, uint32)
        sw = cuda.local.array(4, uint32)
        cw[0], cw[1], cw[2], cw[3] = ptx.load_u32x4(cos, row * (head_dim // 2) + lt * 4)
        sw[0], sw[1], sw[2], sw[3] = ptx.load_u32x4(sin, row * (head_dim // 2) + lt * 4)
        sign = float32(-1) if lt < partner else float32(1)  # rotate_half: (-x2, x1)
        for i in range(4):
            x0, x1 = ptx.halves(words[i])
            p0, p1 = ptx.shfl_xor(x0, partner), ptx.shfl_xor(x1, partner)
            c0, c1 = ptx.halves(cw[i])
            s0, s1 = ptx.halves(sw[i])
            words[i] = ptx.pack_halves(x0 * c0 + sign * p0 * s0, x1 * c1 + sign * p1 * s1)

    @cuda.jit(device=True, inline="always")
    def encode(words, codes):
        """The lane's 8 fp16 elements (4 words) of a new token as the cache holds them: the words
        themselves (fp16), or int8/int4 codes, returning the token's (scale, zero) word: the
        format and arithmetic of kv_quant.write_kernel. Every lane of the warp calls it."""
        if bits == 16:
            for i in range(4):
                codes[i] = words[i]
            return uint32(0)
        vals = cuda.local.array(E, float32)
        for i in range(4):
            vals[2 * i], vals[2 * i + 1] = ptx.halves(words[i])
        lo, hi = vals[0], vals[0]
        for e in range(1, E):
            lo, hi = min(lo, vals[e]), max(hi, vals[e])
        off = partner
        while off > 0:  # over the lanes of the token's row
            lo = min(lo, ptx.shfl_xor(lo, off))
            hi = max(hi, ptx.shfl_xor(hi, off))
            off //= 2
        scale = float32(float16(max((hi - lo) / qmax, float32(1e-6))))
        zero = float32(float16(-lo / scale))
        for i in range(wpl):
            codes[i] = 0
        for e in range(E):
            code = uint32(min(max(ptx.rint(vals[e] / scale + zero), float32(0)), qmax))
            codes[e // per_word] |= code << uint32(bits * (e % per_word))
        return ptx.pack_halves(scale, zero)

    @cuda.jit(device=True, inline="always")
    def merge(m_part, l_part, acc_part, out, row0, n_parts, used, sm_acc):
        """out = sum_p e^(m_p - M) acc_p / sum_p e^(m_p - M) l_p for the block's heads (rows row0..).

        First a warp per head turns the partitions' maxima and sums into weights (lanes over
        partitions), then each thread adds 4 dims of the partial outputs over its slice of the
        partitions, MERGE_LOADS 16-byte loads in flight: a loop of one dependent load per
        partition would wait for L2 once per partition (docs/benchmarks.md, "Split-K merge").
        """
        sm_f = cuda.shared.array(merge_weights, float32)
        sm_inv = cuda.shared.array(heads, float32)
        tid, warp, lane = cuda.threadIdx.x, cuda.threadIdx.x // 32, cuda.threadIdx.x % 32
        for h in range(warp, heads, warps):
            base = (row0 + h) * n_parts
            mx = NEG
            for p in range(lane, used, 32):
                mx = max(mx, ptx.load_cg(m_part, base + p))
            off = 16
            while off > 0:
                mx = max(mx, ptx.shfl_xor(mx, off))
                off //= 2
            weight = float32(0)
            for p in range(lane, used, 32):
                f = math.exp2(ptx.load_cg(m_part, base + p) - mx)
                sm_f[h * MAX_PARTS + p] = f
                weight += f * ptx.load_cg(l_part, base + p)
            off = 16
            while off > 0:
                weight += ptx.shfl_xor(weight, off)
                off //= 2
            if lane == 0:
                sm_inv[h] = 1 / weight
        cuda.syncthreads()
        words = cuda.local.array(merge_words, uint32)
        for j in range(tid, quads * slices, 32 * warps):
            quad, s = j % quads, j // quads
            h, d = quad * 4 // head_dim, quad * 4 % head_dim
            a0, a1, a2, a3 = float32(0), float32(0), float32(0), float32(0)
            for p0 in range(s, used, slices * MERGE_LOADS):
                for u in range(MERGE_LOADS):
                    p = min(p0 + u * slices, used - 1)
                    w0, w1, w2, w3 = ptx.load_cg_u32x4(acc_part, ((row0 + h) * n_parts + p) * head_dim + d)
                    words[4 * u], words[4 * u + 1], words[4 * u + 2], words[4 * u + 3] = w0, w1, w2, w3
                for u in range(MERGE_LOADS):
                    p = p0 + u * slices
                    f = sm_f[h * MAX_PARTS + p] if p < used else float32(0)
                    a0 += f * ptx.as_float(words[4 * u])
                    a1 += f * ptx.as_float(words[4 * u + 1])
                    a2 += f * ptx.as_float(words[4 * u + 2])
                    a3 += f * ptx.as_float(words[4 * u + 3])
            at = s * heads * head_dim + quad * 4
            sm_acc[at], sm_acc[at + 1], sm_acc[at + 2], sm_acc[at + 3] = a0, a1, a2, a3
        cuda.syncthreads()
        for i in range(tid, heads * head_dim, 32 * warps):
            total = float32(0)
            for s in range(slices):
                total += sm_acc[s * heads * head_dim + i]
            out[row0 * head_dim + i] = total * sm_inv[i // head_dim]

    @cuda.jit(device=True, inline="always")
    def unpack(words, at, vals, magic):
        """The lane's 8 elements of one token as float32 (codes times code_units for int8/int4);
        magic = MAGIC, an argument so that `code | magic` fuses with the mask (one LOP3)."""
        if bits == 16:
            for i in range(4):
                vals[2 * i], vals[2 * i + 1] = ptx.halves(words[at + i])
        else:
            per_half = 2 if bits == 8 else 4  # codes per 16-bit half-word
            mask = BYTE if bits == 8 else NIBBLE
            for i in range(8):
                word = words[at + i // (2 * per_half)]
                half = word if (i // per_half) % 2 == 0 else word >> uint32(16)
                code = half & (mask << uint32(bits * (i % per_half)))
                vals[i] = ptx.as_float(code | magic) - MAGIC_F

    @cuda.jit(device=True, inline="always")
    def load(cache, index, words, at):
        if wpl == 4:
            words[at], words[at + 1], words[at + 2], words[at + 3] = ptx.load_u32x4(cache, index)
        elif wpl == 2:
            words[at], words[at + 1] = ptx.load_u32x2(cache, index)
        else:
            words[at] = ptx.load_u32(cache, index)

    @cuda.jit(device=True, inline="always")
    def load_tile(k_cache, v_cache, k_scale_zero, v_scale_zero, row0, t0, lt, tok, kw, vw, k_pair, v_pair):
        """Issue every load of one tile: K and V rows (and scale/zero words) of its tokens."""
        for st in range(steps):
            t = min(t0 + st * tpw + tok, block_size - 1)
            load(k_cache, (row0 + t) * row_words + lt * wpl, kw, st * wpl)
            load(v_cache, (row0 + t) * row_words + lt * wpl, vw, st * wpl)
            if quantized:
                k_pair[st] = ptx.load_u32(k_scale_zero, row0 + t)
                v_pair[st] = ptx.load_u32(v_scale_zero, row0 + t)

    @cuda.jit(device=True, inline="always")
    def attends(fresh_tile, st, tok, blk, pos, cached_end):
        """Whether the lane's token of load step st counts: the new token (step 0, tok 0) in the
        fresh tile, else a token of the partition that is in the cache."""
        if fresh_tile:
            return st == 0 and tok == 0
        return blk * block_size + pos < cached_end and pos < block_size

    @cuda.jit(device=True, inline="always")
    def take_fresh(kf, vf, kf_pair, vf_pair, kw, vw, k_pair, v_pair):
        """Make the new token load step 0 of the next tile (the other steps do not count)."""
        for i in range(wpl):
            kw[i], vw[i] = kf[i], vf[i]
        k_pair[0], v_pair[0] = kf_pair, vf_pair

    @L.kernel(threads=32 * warps, min_blocks=min_blocks, fastmath=True)
    def attention(q, k_cache, v_cache, k_scale_zero, v_scale_zero, block_tables, context_lens, scale_log2,
                  partition, magic, k_new, v_new, cos, sin, slots,
                  out, m_part, l_part, acc_part, counters):
        # q: fp16 [B, H, D] as int32 pairs; caches: [blocks, H_kv, block_size, row_words] int32;
        # k_scale_zero/v_scale_zero: the fp16 (scale, zero) pairs as int32 [blocks, H_kv, block_size]
        # (quantized only); rope only: k_new/v_new fp16 [B, H_kv, D] and cos/sin fp16 [B, D] as int32
        # pairs, slots int64 [B]
        n_heads = q.shape[1]
        kv_heads = k_cache.shape[1]
        group = n_heads // kv_heads
        n_groups = group // heads
        # q and the new K/V are the previous kernel's output: wait for it (every load below
        # depends on b) and let the next kernel start launching (an overlapped launch)
        b = cuda.blockIdx.x // (kv_heads * n_groups) + ptx.wait_for_previous_grid()
        ptx.allow_next_grid()
        kv_head = (cuda.blockIdx.x // n_groups) % kv_heads
        head0 = kv_head * group + (cuda.blockIdx.x % n_groups) * heads
        part, n_parts = cuda.blockIdx.y, cuda.gridDim.y
        start = part * partition
        ctx = context_lens[b]
        if start >= ctx:
            return  # an empty partition (the whole block leaves: no barrier is skipped)
        end = min(start + partition, ctx)
        # rope: token ctx - 1 is the step's new one, not in the cache; the partition that holds it
        # takes it from k_new/v_new (one more tile, warp 0's last) and writes it to the cache
        fresh = rope and ctx - 1 < end
        cached_end = min(end, ctx - 1) if rope else end
        warp, lane = cuda.threadIdx.x // 32, cuda.threadIdx.x % 32
        lt, tok = lane % lpt, lane // lpt  # which 8 elements, which token of a step

        qv = cuda.local.array(hx, float32)  # the lane's query elements, pre-scaled
        qsum = cuda.local.array(heads, float32)  # sum of each head's query (quantized scores subtract zero * it)
        acc = cuda.local.array(hx, float32)  # running weighted sum of V rows
        m_run = cuda.local.array(heads, float32)  # online softmax: running max ...
        l_run = cuda.local.array(heads, float32)  # ... and running sum of exp2(score - max)
        corr = cuda.local.array(heads, float32)  # sum of p * scale * zero of V, subtracted at the end
        score = cuda.local.array(hs, float32)
        kw = cuda.local.array(kv_words, uint32)  # K and V words of the current tile
        vw = cuda.local.array(kv_words, uint32)
        k_pair = cuda.local.array(steps, uint32)  # their (scale, zero) words, one per load step
        v_pair = cuda.local.array(steps, uint32)
        kw_next = cuda.local.array(kv_words, uint32)
        vw_next = cuda.local.array(kv_words, uint32)
        k_pair_next = cuda.local.array(steps, uint32)
        v_pair_next = cuda.local.array(steps, uint32)
        vals = cuda.local.array(E, float32)
        qw = cuda.local.array(4, uint32)
        for h in range(heads):
            qw[0], qw[1], qw[2], qw[3] = ptx.load_u32x4(q, (b * n_heads + head0 + h) * (head_dim // 2) + lt * 4)
            if rope:
                rotate(qw, cos, sin, b, lt)
            qs = float32(0)
            for i in range(4):
                lo, hi = ptx.halves(qw[i])
                qv[h * E + 2 * i] = lo * scale_log2 / unit[2 * i]
                qv[h * E + 2 * i + 1] = hi * scale_log2 / unit[2 * i + 1]
                qs += (lo + hi) * scale_log2
            off = lpt // 2
            while off > 0:  # sum of q over the whole head: quantized scores need it
                qs += ptx.shfl_xor(qs, off)
                off //= 2
            qsum[h], m_run[h], l_run[h], corr[h] = qs, NEG, 0, 0
            for e in range(E):
                acc[h * E + e] = 0

        kf = cuda.local.array(wpl, uint32)  # the new token's K and V as the cache holds them
        vf = cuda.local.array(wpl, uint32)
        kf_pair, vf_pair = uint32(0), uint32(0)
        if fresh and warp == 0:
            for h in range(2):  # K (rotated), then V
                src = k_new if h == 0 else v_new
                qw[0], qw[1], qw[2], qw[3] = ptx.load_u32x4(src, (b * kv_heads + kv_head) * (head_dim // 2) + lt * 4)
                if h == 0:
                    rotate(qw, cos, sin, b, lt)
                    kf_pair = encode(qw, kf)
                else:
                    vf_pair = encode(qw, vf)
            if cuda.blockIdx.x % n_groups == 0 and tok == 0:  # one block per KV head writes it
                slot = slots[b]
                row = ((slot // block_size) * kv_heads + kv_head) * block_size + slot % block_size
                for i in range(wpl):
                    ptx.store_u32(k_cache, row * row_words + lt * wpl + i, kf[i])
                    ptx.store_u32(v_cache, row * row_words + lt * wpl + i, vf[i])
                if quantized and lt == 0:
                    ptx.store_u32(k_scale_zero, row, kf_pair)
                    ptx.store_u32(v_scale_zero, row, vf_pair)

        # this warp's tiles: KV blocks first + warp, first + warp + warps, ..., `tiles` each
        # (and, for warp 0 where the partition holds the new token, one more: the fresh tile)
        first = start // block_size
        n_cached = max(0, ((cached_end + block_size - 1) // block_size - first - warp + warps - 1) // warps) * tiles
        n_tiles = n_cached + (1 if fresh and warp == 0 else 0)
        if n_cached > 0:
            blk = first + warp
            load_tile(k_cache, v_cache, k_scale_zero, v_scale_zero,
                      (block_tables[b, blk] * kv_heads + kv_head) * block_size,
                      0, lt, tok, kw_next, vw_next, k_pair_next, v_pair_next)
        elif n_tiles > 0:
            take_fresh(kf, vf, kf_pair, vf_pair, kw_next, vw_next, k_pair_next, v_pair_next)
        for j in range(n_tiles):
            for i in range(kv_words):  # the tile loaded last round becomes the current one
                kw[i], vw[i] = kw_next[i], vw_next[i]
            for st in range(steps):
                k_pair[st], v_pair[st] = k_pair_next[st], v_pair_next[st]
            blk = first + warp + (j // tiles) * warps
            t0 = (j % tiles) * steps * tpw
            fresh_tile = j == n_cached
            if j + 1 < n_cached:  # start loading the next tile before computing this one
                nblk = first + warp + ((j + 1) // tiles) * warps
                load_tile(k_cache, v_cache, k_scale_zero, v_scale_zero,
                          (block_tables[b, nblk] * kv_heads + kv_head) * block_size,
                          ((j + 1) % tiles) * steps * tpw, lt, tok, kw_next, vw_next, k_pair_next, v_pair_next)
            elif j + 1 < n_tiles:
                take_fresh(kf, vf, kf_pair, vf_pair, kw_next, vw_next, k_pair_next, v_pair_next)
            for st in range(steps):  # scores of the tile's tokens, for every head
                unpack(kw, st * wpl, vals, magic)
                pos = t0 + st * tpw + tok
                valid = attends(fresh_tile, st, tok, blk, pos, cached_end)
                for h in range(heads):
                    d = float32(0)
                    for e in range(E):
                        d += qv[h * E + e] * vals[e]
                    off = lpt // 2
                    while off > 0:
                        d += ptx.shfl_xor(d, off)
                        off //= 2
                    if quantized:
                        sc, z = ptx.halves(k_pair[st])
                        d = sc * (d - z * qsum[h])
                    score[st * heads + h] = d if valid else NEG
            for h in range(heads):  # online softmax: new running max, rescale what was summed
                mx = NEG
                for st in range(steps):
                    mx = max(mx, score[st * heads + h])
                off = lpt
                while off < 32:
                    mx = max(mx, ptx.shfl_xor(mx, off))
                    off *= 2
                m_new = max(m_run[h], mx)
                alpha = math.exp2(m_run[h] - m_new)
                m_run[h] = m_new
                l_run[h] *= alpha
                corr[h] *= alpha
                for e in range(E):
                    acc[h * E + e] *= alpha
            for st in range(steps):  # weighted sum of the tile's V rows
                pos = t0 + st * tpw + tok
                if attends(fresh_tile, st, tok, blk, pos, cached_end):
                    unpack(vw, st * wpl, vals, magic)
                    sc, z = float32(1), float32(0)
                    if quantized:
                        sc, z = ptx.halves(v_pair[st])
                    for h in range(heads):
                        p = math.exp2(score[st * heads + h] - m_run[h])
                        l_run[h] += p
                        ps = p * sc
                        corr[h] += ps * z
                        for e in range(E):
                            acc[h * E + e] += ps * vals[e]

        # merge the token groups of each warp (lanes with the same lt) ...
        for h in range(heads):
            off = lpt
            while off < 32:
                l_run[h] += ptx.shfl_xor(l_run[h], off)
                corr[h] += ptx.shfl_xor(corr[h], off)
                for e in range(E):
                    acc[h * E + e] += ptx.shfl_xor(acc[h * E + e], off)
                off *= 2
        # ... then the warps, through shared memory
        sm_m = cuda.shared.array(smem_heads, float32)
        sm_l = cuda.shared.array(smem_heads, float32)
        sm_acc = cuda.shared.array(smem_acc, float32)
        if tok == 0:
            for h in range(heads):
                for e in range(E):
                    sm_acc[(warp * heads + h) * head_dim + lt * E + e] = acc[h * E + e] / unit[e] - corr[h]
                if lt == 0:
                    sm_m[warp * heads + h], sm_l[warp * heads + h] = m_run[h], l_run[h]
        cuda.syncthreads()
        used = (ctx + partition - 1) // partition  # partitions with tokens of this sequence
        for i in range(cuda.threadIdx.x, heads * head_dim, warps * 32):
            h, d = i // head_dim, i % head_dim
            mx = NEG
            for w in range(warps):
                mx = max(mx, sm_m[w * heads + h])
            total, weight = float32(0), float32(0)
            for w in range(warps):
                f = math.exp2(sm_m[w * heads + h] - mx)
                weight += f * sm_l[w * heads + h]
                total += f * sm_acc[(w * heads + h) * head_dim + d]
            row = b * n_heads + head0 + h
            if used == 1:
                out[row * head_dim + d] = total / weight
            else:
                acc_part[(row * n_parts + part) * head_dim + d] = total
                if d == 0:
                    m_part[row * n_parts + part], l_part[row * n_parts + part] = mx, weight
        # ... and the partitions: sum_p e^(m_p - M) acc_p / sum_p e^(m_p - M) l_p, by the last to finish
        if used > 1 and splitk.last_to_arrive(counters, cuda.blockIdx.x, used):
            merge(m_part, l_part, acc_part, out, b * n_heads + head0, n_parts, used, sm_acc)

    return attention


# ----------------------------------------------------------------------------- launch

class NewTokens(NamedTuple):
    """A decode step's new tokens, for attention that rotates and caches them itself.

    With them, q comes before the rotary embedding too: the kernel rotates q and the new K,
    writes K and V (as codes, for int8/int4 caches) at `slots`, and attends to the new token
    from its registers; the rest of the context comes from the cache. That is the rotary
    kernel and the K/V-write kernel of every layer gone from a decode step.
    """
    k: torch.Tensor      # fp16 [B, H_kv, D], not rotated
    v: torch.Tensor      # fp16 [B, H_kv, D]
    cos: torch.Tensor    # fp16 [B, D]: cos of each token's position's angles (the model's `rope`)
    sin: torch.Tensor    # fp16 [B, D]
    slots: torch.Tensor  # int64 [B]: block * block_size + offset to write each token's K/V to


def rope_arguments(new: NewTokens | None, q: torch.Tensor, kv_heads: int) -> tuple:
    """The kernel's k_new, v_new, cos, sin and slots arguments (placeholders without `new`)."""
    batch, _, head_dim = q.shape
    if new is None:
        no_slots = L.workspace("attention.no_slots", (1,), torch.int64, q.device)
        return q.view(torch.int32), q.view(torch.int32), q[0].view(torch.int32), q[0].view(torch.int32), no_slots
    L.require(head_dim >= 16, f"attention with the rotary embedding inside needs head_dim >= 16, got {head_dim}")
    for name, t, shape in (("k", new.k, (batch, kv_heads, head_dim)), ("v", new.v, (batch, kv_heads, head_dim)),
                           ("cos", new.cos, (batch, head_dim)), ("sin", new.sin, (batch, head_dim))):
        L.require(t.dtype == torch.float16 and t.is_contiguous() and tuple(t.shape) == shape,
                  f"new tokens' {name} must be contiguous fp16 {list(shape)}, got {t.dtype} {list(t.shape)}")
    L.require(new.slots.dtype == torch.int64 and tuple(new.slots.shape) == (batch,),
              f"new tokens' slots must be int64 [{batch}], got {new.slots.dtype} {list(new.slots.shape)}")
    return (new.k.view(torch.int32), new.v.view(torch.int32), new.cos.view(torch.int32), new.sin.view(torch.int32),
            new.slots)


def plan_partition(batch: int, kv_heads: int, groups: int, max_context: int, block_size: int,
                   warps: int) -> int:
    """Tokens per partition: split the context only as much as needed to fill the GPU."""
    units = batch * kv_heads * groups
    splits = min(MAX_PARTS, max(1, -(-4 * L.sm_count() // units)))
    size = -(-max_context // splits)
    size = max(size, warps * block_size * 2)
    return -(-size // block_size) * block_size


def launch_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
                     context_lens: torch.Tensor, *, bits: int = 16, k_scale_zero: torch.Tensor | None = None,
                     v_scale_zero: torch.Tensor | None = None, scale: float | None = None,
                     max_context_len: int | None = None, out: torch.Tensor | None = None,
                     partition: int | None = None, warps: int = 4, steps: int | None = None,
                     min_blocks: int = 0, new: NewTokens | None = None) -> torch.Tensor:
    """The launcher behind `paged_attention` (bits=16) and `kv_quant.paged_attention_quant` (8, 4),
    with the tuning knobs the public functions leave to the plan:

    - `partition`: tokens per split-K partition (a multiple of block_size; default `plan_partition`);
    - `warps`: warps per thread block (each takes whole KV blocks);
    - `steps`: load steps per tile (default 4 for fp16, 8 for int8/int4, see below);
    - `min_blocks`: a launch bound (blocks per SM the compiler must fit; 0 = none).

    `new`: q is not rotated, and the step's new tokens are not in the cache (`NewTokens`).
    """
    batch, n_heads, head_dim = q.shape
    kv_heads, block_size = k_cache.shape[1], k_cache.shape[2]
    L.require(q.dtype == torch.float16 and q.is_contiguous(), "paged attention wants contiguous fp16 q [B, H, D]")
    L.require(head_dim % E == 0 and 32 % (head_dim // E) == 0 and head_dim <= 256,
              f"head_dim must be 8, 16, 32, 64, 128 or 256, got {head_dim}")
    L.require(n_heads % kv_heads == 0, f"{n_heads} query heads do not share {kv_heads} KV heads evenly")
    L.require(block_tables.dtype == torch.int32 and context_lens.dtype == torch.int32,
              "block_tables and context_lens must be int32")
    for t in (k_cache, v_cache, block_tables, context_lens):
        L.require(t.is_contiguous(), "paged attention wants contiguous caches and tables")
    heads = heads_per_block(n_heads // kv_heads)
    groups = n_heads // kv_heads // heads
    max_context = max_context_len or block_tables.shape[1] * block_size
    partition = partition or plan_partition(batch, kv_heads, groups, max_context, block_size, warps)
    L.require(partition % block_size == 0, f"partition ({partition}) must be a multiple of block_size")
    n_parts = -(-max_context // partition)
    L.require(n_parts <= MAX_PARTS, f"{n_parts} partitions of {partition} tokens: at most {MAX_PARTS} per sequence")
    if out is None:
        out = torch.empty_like(q)
    parts = max(n_parts, 2) * batch * n_heads
    m_part = L.workspace("attention.m", (parts,), torch.float32, q.device)
    l_part = L.workspace("attention.l", (parts,), torch.float32, q.device)
    acc_part = L.workspace("attention.acc", (parts * head_dim,), torch.float32, q.device)
    # k_pairs, v_pairs: the (scale, zero) fp16 pairs as one int32 word per token; fp16 caches have none
    # (any int32 array fills the slot)
    k_pairs, v_pairs = ((t.view(torch.int32).reshape(-1) if t is not None else context_lens)
                        for t in (k_scale_zero, v_scale_zero))
    # a tile of 8-bit or 4-bit codes is half or a quarter of the bytes: take more steps per tile
    # so that as many bytes are in flight per warp as with fp16; except int8 for several heads
    # per block, which then needs all 255 registers and runs slower than with 4 steps
    # (docs/benchmarks.md, "Split-K merge")
    steps = steps or (4 if bits == 16 or (bits == 8 and heads > 1) else 8)
    kernel = make_kernel(head_dim, block_size, heads, bits, warps, steps, min_blocks, new is not None)
    scale_log2 = np.float32((scale if scale is not None else head_dim ** -0.5) * LOG2E)
    used = batch * n_heads * n_parts
    counters = L.workspace("attention.counters", (batch * kv_heads * groups,), torch.int32, q.device)
    L.launch(kernel, (batch * kv_heads * groups, n_parts), (32 * warps,), q.view(torch.int32),
             k_cache.view(torch.int32), v_cache.view(torch.int32), k_pairs, v_pairs, block_tables, context_lens,
             scale_log2, partition, MAGIC, *rope_arguments(new, q, kv_heads), out.view(-1), m_part[:used],
             l_part[:used], acc_part[:used * head_dim], counters, overlap=True)
    return out


def paged_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
                    context_lens: torch.Tensor, scale: float | None = None, max_context_len: int | None = None,
                    out: torch.Tensor | None = None, new: NewTokens | None = None) -> torch.Tensor:
    """Decode attention over an fp16 paged cache: q [B, H, D] fp16 -> [B, H, D] fp16.

    `max_context_len` (an upper bound the caller knows on the host) fixes the number of
    partitions without reading `context_lens` back from the GPU, so the launch can be
    captured in a CUDA graph; by default it is block_tables.shape[1] * block_size.
    `new`: the step's tokens before the rotary embedding and not yet cached (`NewTokens`).
    Tuning knobs (partition, warps, steps): `launch_attention`.
    """
    L.require(k_cache.dtype == torch.float16 and v_cache.dtype == torch.float16,
              "paged_attention reads fp16 caches; use kv_quant.paged_attention_quant for int8/int4")
    return launch_attention(q, k_cache, v_cache, block_tables, context_lens, scale=scale,
                            max_context_len=max_context_len, out=out, new=new)


# ----------------------------------------------------------------------------- check and bench

def random_paged(batch: int, lengths: list[int], kv_heads: int, head_dim: int, block_size: int,
                 generator: torch.Generator | None = None, spare_blocks: int = 3
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random fp16 cache with each sequence's blocks scattered over the pool.

    Returns (k_cache, v_cache, block_tables, context_lens) on the CPU; unused table slots
    are -1 and a few pool blocks belong to nobody (holes), as in a running engine.
    """
    need = [-(-n // block_size) for n in lengths]
    pool = sum(need) + spare_blocks
    order = torch.randperm(pool, generator=generator).int()
    width = max(need)
    tables = torch.full((batch, width), -1, dtype=torch.int32)
    used = 0
    for b, n in enumerate(need):
        tables[b, :n] = order[used:used + n]
        used += n
    shape = (pool, kv_heads, block_size, head_dim)
    k = torch.randn(shape, generator=generator).half()
    v = torch.randn(shape, generator=generator).half()
    return k, v, tables, torch.tensor(lengths, dtype=torch.int32)


def attention_tolerance(head_dim: int, context: int) -> float:
    """Relative error bound: fp16 output rounding, fp32 dot products of head_dim terms whose
    error moves each softmax weight by ~D*u32*|score|, and ~2 ulp exp2 (fast math)."""
    return 2 * measure.U16 + 8 * (head_dim + context) * measure.U32 + 4 * 2.0**-22


def check(lengths: tuple[int, ...] = (1, 21, 40), heads: int = 4, kv_heads: int = 2, head_dim: int = 32,
          block_size: int = 16, partition: int | None = None, warps: int = 2, seed: int | None = None,
          max_context: int | None = None) -> float:
    """Run the kernel on a fresh random cache; return the relative error (raises if too large).
    `max_context`: plan the launch for this many tokens (a CUDA graph's bound), not the table's width."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    k, v, tables, lens = random_paged(len(lengths), list(lengths), kv_heads, head_dim, block_size, gen)
    q = torch.randn(len(lengths), heads, head_dim, generator=gen).half()
    want = reference(q, k, v, tables, lens, dtype=torch.float64)
    dev = L.device()
    out = measure.poisoned(tuple(q.shape), torch.float16, dev)
    launch_attention(q.to(dev), k.to(dev), v.to(dev), tables.to(dev), lens.to(dev), out=out,
                     partition=partition, warps=warps, max_context_len=max_context)
    return measure.assert_close(f"paged_attention lengths={lengths} H={heads}/{kv_heads} D={head_dim} "
                                f"partition={partition} max_context={max_context}", out, want,
                                attention_tolerance(head_dim, max(lengths)))


def bench_cache(batch: int, context: int, kv_heads: int, head_dim: int = 128, block_size: int = 16):
    """A full random cache on the GPU for the bench: every sequence `context` tokens long."""
    need = -(-context // block_size)
    pool = batch * need
    tables = torch.randperm(pool, device="cuda", dtype=torch.int32).view(batch, need)
    shape = (pool, kv_heads, block_size, head_dim)
    k = torch.randn(shape, device="cuda", dtype=torch.float16)
    v = torch.randn(shape, device="cuda", dtype=torch.float16)
    return k, v, tables, torch.full((batch,), context, dtype=torch.int32, device="cuda")


def sdpa_us(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tables: torch.Tensor, context: int) -> float:
    """Time torch SDPA over the same cache gathered into contiguous [B, H_kv, T, D] (gather untimed)."""
    kc = k[tables.long()].permute(0, 2, 1, 3, 4).reshape(q.shape[0], k.shape[1], -1, k.shape[3])[:, :, :context]
    vc = v[tables.long()].permute(0, 2, 1, 3, 4).reshape(q.shape[0], k.shape[1], -1, k.shape[3])[:, :, :context]
    kc, vc = kc.contiguous(), vc.contiguous()
    q4 = q.unsqueeze(2)
    gqa = q.shape[1] != k.shape[1]
    us = measure.time_us(lambda i: F.scaled_dot_product_attention(q4, kc, vc, enable_gqa=gqa), 1, calls=5, repeats=9)
    del kc, vc
    return us


def bench(batch: int, context: int, heads: int = 32, kv_heads: int = 32, head_dim: int = 128,
          block_size: int = 16) -> dict:
    """Time the kernel (and SDPA on the gathered cache) for one batch and context (GPU only)."""
    k, v, tables, lens = bench_cache(batch, context, kv_heads, head_dim, block_size)
    q = torch.randn(batch, heads, head_dim, device="cuda", dtype=torch.float16)
    out = torch.empty_like(q)
    us = measure.time_us(lambda i: paged_attention(q, k, v, tables, lens, max_context_len=context, out=out),
                         1, calls=5, repeats=9)
    kv_bytes = 2 * batch * context * kv_heads * head_dim * 2
    row = {"kernel": "paged_attention", "shape": f"B={batch} ctx={context} H={heads}/{kv_heads} D={head_dim}",
           "us": us, "bytes": kv_bytes + 4 * q.numel(), "flops": 4 * batch * heads * context * head_dim,
           "partition": plan_partition(batch, kv_heads, heads // kv_heads // heads_per_block(heads // kv_heads),
                                       context, block_size, 4), "sdpa_us": sdpa_us(q, k, v, tables, context)}
    return row
