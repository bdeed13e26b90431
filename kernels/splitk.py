"""Split-K in one launch: the last block to finish a column tile adds up the others.

A decode GEMV has too few output columns to keep 132 SMs busy, so the K dimension is
split over `splits` blocks per column tile. Each block writes its fp32 partial sums to a
workspace, then takes a ticket from a per-tile counter; the block that draws the last
ticket adds the partials in split order (deterministic, unlike atomics into the output)
and writes fp16. It also resets the counter, so the workspace is ready for the next
launch without a memset, and the whole thing stays one capturable launch.

Why not thread-block clusters (sm_90), whose blocks can add up through each other's shared
memory instead of L2: tried on an H200 for the batch-1 int4 GEMV (commit 396b87c, reverted),
with the same bits, and 47-52% slower on q/k/v and o. A cluster must fit inside one GPC, so
clusters of 4-8 blocks fit 240-248 blocks at once where these grids of 256-384 blocks fill one
wave of ordinary blocks: the last clusters wait for a second wave. In the same clusters the
shared-memory reduction was no cheaper than this workspace (docs/benchmarks.md, "split-K inside
thread-block clusters").
"""
from __future__ import annotations

from numba import cuda, float32, int32

from labkit.kernels import ptx


@cuda.jit(device=True, inline="always")
def last_to_arrive(counters, tile, splits):
    """True in every thread of the block that finishes tile `tile` last (call from all threads)."""
    flag = cuda.shared.array(1, int32)
    cuda.threadfence()  # make this block's partial sums visible to the block that adds them
    cuda.syncthreads()
    if cuda.threadIdx.x == 0 and cuda.threadIdx.y == 0:
        ticket = cuda.atomic.add(counters, tile, 1)
        flag[0] = 1 if ticket == splits - 1 else 0
        if ticket == splits - 1:
            counters[tile] = 0
    cuda.syncthreads()
    return flag[0] == 1


def partial_adder(reads: int):
    """sum_partials(partial, splits, stride, index): partial[0, index] + ... + partial[splits - 1,
    index] for a flat [splits, stride] buffer, added in split order, `reads` (4 or 8) loads at a
    time: one load per loop turn would wait for L2 once per split, and the whole launch waits
    for this last block."""
    if reads not in (4, 8):
        raise ValueError(f"partial_adder reads 4 or 8 partial sums at a time, got {reads}")
    wide = reads == 8

    @cuda.jit(device=True, inline="always")
    def sum_partials(partial, splits, stride, index):
        total = float32(0.0)
        last = (splits - 1) * stride + index
        for s in range(0, splits, reads):
            at = s * stride + index
            v0 = ptx.load_cg(partial, at)
            v1 = ptx.load_cg(partial, min(at + stride, last))
            v2 = ptx.load_cg(partial, min(at + 2 * stride, last))
            v3 = ptx.load_cg(partial, min(at + 3 * stride, last))
            v4 = v5 = v6 = v7 = float32(0.0)
            if wide:  # a constant: decided when the kernel is compiled
                v4 = ptx.load_cg(partial, min(at + 4 * stride, last))
                v5 = ptx.load_cg(partial, min(at + 5 * stride, last))
                v6 = ptx.load_cg(partial, min(at + 6 * stride, last))
                v7 = ptx.load_cg(partial, min(at + 7 * stride, last))
            total += v0
            total += v1 if s + 1 < splits else float32(0.0)
            total += v2 if s + 2 < splits else float32(0.0)
            total += v3 if s + 3 < splits else float32(0.0)
            if wide:
                total += v4 if s + 4 < splits else float32(0.0)
                total += v5 if s + 5 < splits else float32(0.0)
                total += v6 if s + 6 < splits else float32(0.0)
                total += v7 if s + 7 < splits else float32(0.0)
        return total

    return sum_partials


@cuda.jit(device=True, inline="always")
def read_eight(partial, splits, first, stride, index, v, base):
    """v[base + j] = partial[first + j, index] for j < 8 (past the last split: the last one again):
    eight loads in flight. A kernel that adds up several outputs reads all of theirs, then adds."""
    last = (splits - 1) * stride + index
    for j in range(8):
        v[base + j] = ptx.load_cg(partial, min((first + j) * stride + index, last))


@cuda.jit(device=True, inline="always")
def add_eight(v, base, count, total):
    """total + v[base] + ... + v[base + count - 1] (the first 8 at most), in split order: read_eight
    and add_eight over splits 0, 8, 16, ... give the same bits as sum_partials."""
    for j in range(8):
        total += v[base + j] if j < count else float32(0.0)
    return total


#: Eight loads at a time: the batch-1 int4 GEMV's o and down tails add up 8 and 11 splits, and on an
#: H200 took 0.3 and 0.6 us less than with four (docs/benchmarks.md, "the split-K tail reads eight").
sum_partials = partial_adder(8)
