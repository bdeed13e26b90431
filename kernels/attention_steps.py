"""The road from a naive decode attention to paged_attention.py, one idea per step (notebook 07).

Every step computes the same thing: for each sequence b and query head h, the new token's
query q[b, h] attends to the `context_lens[b]` cached keys and values of its KV head,
out = softmax(q . K^T * scale) V. Each step changes one thing about the one before:

1. `contiguous`: one thread per (sequence, head) over a contiguous cache [B, H_kv, T, D].
   Three passes over the context: the scores (written to a scratch buffer) and their
   maximum, then the sum of exp(score - max), then the weighted sum of V. The maximum is
   subtracted so that exp never overflows; it is why softmax seems to need two passes.
2. `paged`: the same over a paged cache: token t of sequence b lives in block
   `block_tables[b, t // block_size]` at offset `t % block_size`. Only the address changes:
   a cache of blocks lets the engine give memory to sequences as they grow (notebook 06).
3. `online`: online softmax, one pass and no scratch buffer. Keep a running max m, sum l
   and output acc; when a score raises the max to m', rescale what was summed by
   exp(m - m') first. K and V are read once, and nothing but the output is written.
4. `split_k`: a long context at a small batch is only B x H threads of work, too few to
   keep a GPU's memory busy. Cut the context into partitions, one thread per (sequence,
   head, partition), each writing its unnormalized (m, l, acc); a second kernel merges
   them: out = sum_p e^(m_p - M) acc_p / sum_p e^(m_p - M) l_p with M = max_p m_p
   (flash-decoding).
5. `grouped`: grouped-query attention shares a KV head among H / H_kv query heads. Steps 2-4
   read a KV head's cache once per query head; here one thread serves every query head of
   its KV head, so each K and V row is loaded once and used H / H_kv times.
6. `fast`: `paged_attention.paged_attention`: the same arithmetic with lanes splitting the
   head dimension (16-byte loads, whole tokens per warp load), loads of the next tile in
   flight while one is computed, warps merged in shared memory and partitions merged
   inside the same launch.

The steps are written to be read, not to be fast: steps 1-5 give each thread a whole row of
D elements, so a warp's loads touch 32 different rows and most of each sector is wasted. Two
consequences show in the timings (`bench`; figures in docs/benchmarks.md): split-K gains most,
because it multiplies the threads; and `grouped`, which loads each K/V row once instead of
H / H_kv times, runs fewer threads (one per KV head), each doing the group's work in turn,
so here it is slower than `split_k`. `fast` gets both: every lane loads 16 contiguous bytes
of a row, and one block serves the whole group.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from numba import cuda, float32

from labkit.kernels import launch as L
from labkit.kernels import measure
from labkit.kernels.paged_attention import (attention_tolerance, bench_cache, gather_kv, paged_attention, random_paged,
                                            reference)

STEPS = ("contiguous", "paged", "online", "split_k", "grouped", "fast")
THREADS = 64
MAX_HEAD_DIM = 128  # the output row a thread keeps in registers (local memory) in steps 3-5
MAX_GROUP = 8  # query heads per KV head that one thread of `grouped` serves
GROUP_ACC = MAX_GROUP * MAX_HEAD_DIM  # its output rows (a local array's size must be a constant)
PARTITION = 32  # tokens per partition in split_k and grouped
NEG = np.float32(-1e30)  # "minus infinity" that stays finite


# ----------------------------------------------------------------------------- 1. contiguous

@L.kernel(threads=THREADS)
def contiguous(q, k, v, context_lens, scale, scores, out):
    # q, out: fp16 [B, H, D]; k, v: fp16 [B, H_kv, T, D]; scores: float32 [B, H, T] scratch
    row = cuda.grid(1)
    batch, heads, head_dim = q.shape
    if row >= batch * heads:
        return
    b, h = row // heads, row % heads
    kv = h // (heads // k.shape[1])  # the KV head this query head reads
    n = context_lens[b]
    mx = NEG
    for t in range(n):  # pass 1: scores and their maximum
        s = float32(0)
        for d in range(head_dim):
            s += float32(q[b, h, d]) * float32(k[b, kv, t, d])
        scores[b, h, t] = s * scale
        mx = max(mx, scores[b, h, t])
    total = float32(0)
    for t in range(n):  # pass 2: the softmax's denominator
        total += math.exp(scores[b, h, t] - mx)
    for d in range(head_dim):  # pass 3: the weighted sum of V, one output element at a time
        acc = float32(0)
        for t in range(n):
            acc += math.exp(scores[b, h, t] - mx) * float32(v[b, kv, t, d])
        out[b, h, d] = acc / total


# ----------------------------------------------------------------------------- 2. paged

@L.kernel(threads=THREADS)
def paged(q, k_cache, v_cache, block_tables, context_lens, scale, scores, out):
    # k_cache, v_cache: fp16 [blocks, H_kv, block_size, D]; block_tables: int32 [B, blocks per sequence]
    row = cuda.grid(1)
    batch, heads, head_dim = q.shape
    if row >= batch * heads:
        return
    b, h = row // heads, row % heads
    kv = h // (heads // k_cache.shape[1])
    block_size = k_cache.shape[2]
    n = context_lens[b]
    mx = NEG
    for t in range(n):
        blk, off = block_tables[b, t // block_size], t % block_size  # where token t lives
        s = float32(0)
        for d in range(head_dim):
            s += float32(q[b, h, d]) * float32(k_cache[blk, kv, off, d])
        scores[b, h, t] = s * scale
        mx = max(mx, scores[b, h, t])
    total = float32(0)
    for t in range(n):
        total += math.exp(scores[b, h, t] - mx)
    for d in range(head_dim):
        acc = float32(0)
        for t in range(n):
            blk, off = block_tables[b, t // block_size], t % block_size
            acc += math.exp(scores[b, h, t] - mx) * float32(v_cache[blk, kv, off, d])
        out[b, h, d] = acc / total


# ----------------------------------------------------------------------------- 3. online softmax

@cuda.jit(device=True, inline="always")
def attend_online(q, k_cache, v_cache, block_tables, b, h, kv, start, end, scale, acc):
    """Tokens start..end-1 of sequence b for query head h, in one pass: returns (m, l) and
    leaves acc[d] = sum_t exp(s_t - m) v_t[d] (unnormalized)."""
    head_dim, block_size = q.shape[2], k_cache.shape[2]
    m, l = NEG, float32(0)
    for d in range(head_dim):
        acc[d] = 0
    for t in range(start, end):
        blk, off = block_tables[b, t // block_size], t % block_size
        s = float32(0)
        for d in range(head_dim):
            s += float32(q[b, h, d]) * float32(k_cache[blk, kv, off, d])
        s *= scale
        m_new = max(m, s)
        alpha = math.exp(m - m_new)  # rescales what was summed under the old maximum
        p = math.exp(s - m_new)
        l = l * alpha + p
        for d in range(head_dim):
            acc[d] = acc[d] * alpha + p * float32(v_cache[blk, kv, off, d])
        m = m_new
    return m, l


@L.kernel(threads=THREADS)
def online(q, k_cache, v_cache, block_tables, context_lens, scale, out):
    row = cuda.grid(1)
    batch, heads, head_dim = q.shape
    if row >= batch * heads:
        return
    b, h = row // heads, row % heads
    acc = cuda.local.array(MAX_HEAD_DIM, float32)
    _, l = attend_online(q, k_cache, v_cache, block_tables, b, h, h // (heads // k_cache.shape[1]), 0,
                         context_lens[b], scale, acc)
    for d in range(head_dim):
        out[b, h, d] = acc[d] / l


# ----------------------------------------------------------------------------- 4. split-K

@L.kernel(threads=THREADS)
def split_k(q, k_cache, v_cache, block_tables, context_lens, scale, partition, m_part, l_part, acc_part):
    # one thread per (sequence, head, partition); m_part, l_part: float32 [B, H, P]; acc_part: [B, H, P, D]
    row = cuda.grid(1)
    batch, heads, head_dim = q.shape
    parts = m_part.shape[2]
    if row >= batch * heads * parts:
        return
    b, h, p = row // (heads * parts), row // parts % heads, row % parts
    start, end = p * partition, min((p + 1) * partition, context_lens[b])  # empty when start >= end
    acc = cuda.local.array(MAX_HEAD_DIM, float32)
    m, l = attend_online(q, k_cache, v_cache, block_tables, b, h, h // (heads // k_cache.shape[1]), start, end,
                         scale, acc)
    m_part[b, h, p], l_part[b, h, p] = m, l
    for d in range(head_dim):
        acc_part[b, h, p, d] = acc[d]


@L.kernel(threads=THREADS)
def merge(m_part, l_part, acc_part, out):
    """out = sum_p e^(m_p - M) acc_p / sum_p e^(m_p - M) l_p, one thread per (sequence, head)."""
    row = cuda.grid(1)
    batch, heads, head_dim = out.shape
    if row >= batch * heads:
        return
    b, h = row // heads, row % heads
    mx = NEG
    for p in range(m_part.shape[2]):
        mx = max(mx, m_part[b, h, p])
    total = float32(0)
    for p in range(m_part.shape[2]):
        total += math.exp(m_part[b, h, p] - mx) * l_part[b, h, p]  # an empty partition adds 0
    for d in range(head_dim):
        acc = float32(0)
        for p in range(m_part.shape[2]):
            acc += math.exp(m_part[b, h, p] - mx) * acc_part[b, h, p, d]
        out[b, h, d] = acc / total


# ----------------------------------------------------------------------------- 5. grouped-query

@L.kernel(threads=THREADS)
def grouped(q, k_cache, v_cache, block_tables, context_lens, scale, partition, m_part, l_part, acc_part):
    # one thread per (sequence, KV head, partition), for all H / H_kv query heads of that KV head
    row = cuda.grid(1)
    batch, heads, head_dim = q.shape
    kv_heads, block_size, parts = k_cache.shape[1], k_cache.shape[2], m_part.shape[2]
    group = heads // kv_heads
    if row >= batch * kv_heads * parts:
        return
    b, kv, p = row // (kv_heads * parts), row // parts % kv_heads, row % parts
    start, end = p * partition, min((p + 1) * partition, context_lens[b])
    m = cuda.local.array(MAX_GROUP, float32)
    l = cuda.local.array(MAX_GROUP, float32)
    s = cuda.local.array(MAX_GROUP, float32)
    acc = cuda.local.array(GROUP_ACC, float32)  # acc[g * head_dim + d]
    for g in range(group):
        m[g], l[g] = NEG, 0
        for d in range(head_dim):
            acc[g * head_dim + d] = 0
    for t in range(start, end):
        blk, off = block_tables[b, t // block_size], t % block_size
        for g in range(group):
            s[g] = 0
        for d in range(head_dim):  # each K element is loaded once, for every head of the group
            kd = float32(k_cache[blk, kv, off, d])
            for g in range(group):
                s[g] += float32(q[b, kv * group + g, d]) * kd
        for g in range(group):
            m_new = max(m[g], s[g] * scale)
            alpha, s[g] = math.exp(m[g] - m_new), math.exp(s[g] * scale - m_new)  # s[g] becomes p
            l[g] = l[g] * alpha + s[g]
            m[g] = m_new
            for d in range(head_dim):
                acc[g * head_dim + d] *= alpha
        for d in range(head_dim):  # ... and each V element too
            vd = float32(v_cache[blk, kv, off, d])
            for g in range(group):
                acc[g * head_dim + d] += s[g] * vd
    for g in range(group):
        h = kv * group + g
        m_part[b, h, p], l_part[b, h, p] = m[g], l[g]
        for d in range(head_dim):
            acc_part[b, h, p, d] = acc[g * head_dim + d]


# ----------------------------------------------------------------------------- launch

def contiguous_cache(cache: torch.Tensor, block_tables: torch.Tensor, context_lens: torch.Tensor) -> torch.Tensor:
    """A paged cache gathered into the contiguous [B, H_kv, T, D] that step 1 reads (T: the longest context)."""
    width = int(context_lens.max())
    out = cache.new_zeros(len(context_lens), cache.shape[1], width, cache.shape[3])
    for b, n in enumerate(context_lens.tolist()):
        out[b, :, :n] = gather_kv(cache, block_tables[b], n).transpose(0, 1)
    return out


def run(step: str, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
        context_lens: torch.Tensor, out: torch.Tensor | None = None, partition: int = PARTITION) -> torch.Tensor:
    """Decode attention (q fp16 [B, H, D] -> fp16 [B, H, D]) computed by one of STEPS.

    The caches are paged ([blocks, H_kv, block_size, D]) except for `contiguous`, which takes
    `contiguous_cache`'s [B, H_kv, T, D] (and ignores `block_tables`).
    """
    batch, heads, head_dim = q.shape
    kv_heads = k_cache.shape[1]
    L.require(heads % kv_heads == 0, f"{heads} query heads do not share {kv_heads} KV heads evenly")
    L.require(head_dim <= MAX_HEAD_DIM and heads // kv_heads <= MAX_GROUP,
              f"the steps keep at most {MAX_GROUP} heads of {MAX_HEAD_DIM} elements per thread")
    out = out if out is not None else torch.empty_like(q)
    scale = np.float32(head_dim ** -0.5)
    rows = batch * heads
    if step in ("contiguous", "paged"):
        width = k_cache.shape[2] if step == "contiguous" else block_tables.shape[1] * k_cache.shape[2]
        scores = torch.empty(batch, heads, width, dtype=torch.float32, device=q.device)
        if step == "contiguous":
            L.launch(contiguous, (-(-rows // THREADS),), (THREADS,), q, k_cache, v_cache, context_lens, scale,
                     scores, out)
        else:
            L.launch(paged, (-(-rows // THREADS),), (THREADS,), q, k_cache, v_cache, block_tables, context_lens,
                     scale, scores, out)
    elif step == "online":
        L.launch(online, (-(-rows // THREADS),), (THREADS,), q, k_cache, v_cache, block_tables, context_lens,
                 scale, out)
    elif step in ("split_k", "grouped"):
        parts = -(-block_tables.shape[1] * k_cache.shape[2] // partition)
        m_part = torch.empty(batch, heads, parts, dtype=torch.float32, device=q.device)
        l_part = torch.empty_like(m_part)
        acc_part = torch.empty(batch, heads, parts, head_dim, dtype=torch.float32, device=q.device)
        threads = (rows if step == "split_k" else batch * kv_heads) * parts
        L.launch(split_k if step == "split_k" else grouped, (-(-threads // THREADS),), (THREADS,), q, k_cache,
                 v_cache, block_tables, context_lens, scale, partition, m_part, l_part, acc_part)
        L.launch(merge, (-(-rows // THREADS),), (THREADS,), m_part, l_part, acc_part, out)
    elif step == "fast":
        paged_attention(q, k_cache, v_cache, block_tables, context_lens, out=out)
    else:
        raise ValueError(f"unknown step {step!r}; expected one of {STEPS}")
    return out


# ----------------------------------------------------------------------------- check and bench

def check(step: str, lengths: tuple[int, ...] = (1, 21, 40), heads: int = 4, kv_heads: int = 2, head_dim: int = 32,
          block_size: int = 16, partition: int = PARTITION, seed: int | None = None) -> float:
    """Run one step on a fresh random paged cache; return the relative error against float64
    torch (raises if above `paged_attention.attention_tolerance`). Outputs start as NaN."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    k, v, tables, lens = random_paged(len(lengths), list(lengths), kv_heads, head_dim, block_size, gen)
    q = torch.randn(len(lengths), heads, head_dim, generator=gen).half()
    want = reference(q, k, v, tables, lens, dtype=torch.float64)
    if step == "contiguous":
        k, v = contiguous_cache(k, tables, lens), contiguous_cache(v, tables, lens)
    dev = L.device()
    out = measure.poisoned(tuple(q.shape), torch.float16, dev)
    run(step, q.to(dev), k.to(dev), v.to(dev), tables.to(dev), lens.to(dev), out=out, partition=partition)
    return measure.assert_close(f"attention step {step} lengths={lengths} H={heads}/{kv_heads} D={head_dim}",
                                out, want, attention_tolerance(head_dim, max(lengths)))


def bench(batch: int = 8, context: int = 1024, heads: int = 32, kv_heads: int = 8, head_dim: int = 128,
          block_size: int = 16) -> list[dict]:
    """Time every step on one shape (GPU only): bytes are the K/V cache read once, the floor
    every step is measured against."""
    k, v, tables, lens = bench_cache(batch, context, kv_heads, head_dim, block_size)
    kc, vc = contiguous_cache(k, tables, lens), contiguous_cache(v, tables, lens)
    q = torch.randn(batch, heads, head_dim, device="cuda", dtype=torch.float16)
    out = torch.empty_like(q)
    nbytes = 2 * batch * context * kv_heads * head_dim * 2 + 4 * q.numel()
    rows = []
    for step in STEPS:
        caches = (kc, vc) if step == "contiguous" else (k, v)
        us = measure.time_us(lambda i: run(step, q, *caches, tables, lens, out=out), 1, calls=5, repeats=9)
        rows.append({"kernel": f"attention step {step}", "shape": f"B={batch} ctx={context} H={heads}/{kv_heads} "
                     f"D={head_dim}", "us": us, "bytes": nbytes, "flops": 4 * batch * heads * context * head_dim})
    return rows
