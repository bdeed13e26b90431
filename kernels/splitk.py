"""Split-K in one launch: the last block to finish a column tile adds up the others.

A decode GEMV has too few output columns to keep 132 SMs busy, so the K dimension is
split over `splits` blocks per column tile. Each block writes its fp32 partial sums to a
workspace, then takes a ticket from a per-tile counter; the block that draws the last
ticket adds the partials in split order (deterministic, unlike atomics into the output)
and writes fp16. It also resets the counter, so the workspace is ready for the next
launch without a memset, and the whole thing stays one capturable launch.

That tail is three trips to L2 after a block's last weights (its partial sums out and a
fence, the ticket, the partials back in the last block): on an H200 1.2-2.2 us of a 5-22 us
int4 GEMV (docs/benchmarks.md). On sm_90 the blocks of a column tile may instead form one
thread-block cluster (`launch(..., cluster=(1, splits, 1))`, at most `launch.MAX_CLUSTER`
blocks): each block leaves its sums in its shared memory, the cluster meets at a barrier
(`ptx.cluster_sync`), and block r adds up its share of the tile's columns from every block's
shared memory (`cluster_share`, `sum_cluster`), in split order as well, so both ways give the
same bits. A second barrier keeps each block's shared memory alive until the others have read it.
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


def _adder(read):
    """add(a, splits, stride, index): read(a, stride, index, s) for s = 0, ..., splits - 1, added in
    that order, four reads at a time: one read per loop turn would wait for each in turn, and the
    whole launch waits for this last block."""

    @cuda.jit(device=True, inline="always")
    def add(a, splits, stride, index):
        total = float32(0.0)
        for s in range(0, splits, 4):
            v0 = read(a, stride, index, s)
            v1 = read(a, stride, index, min(s + 1, splits - 1))
            v2 = read(a, stride, index, min(s + 2, splits - 1))
            v3 = read(a, stride, index, min(s + 3, splits - 1))
            total += v0
            total += v1 if s + 1 < splits else float32(0.0)
            total += v2 if s + 2 < splits else float32(0.0)
            total += v3 if s + 3 < splits else float32(0.0)
        return total

    return add


@cuda.jit(device=True, inline="always")
def _workspace_read(partial, stride, index, s):
    return ptx.load_cg(partial, s * stride + index)


@cuda.jit(device=True, inline="always")
def _cluster_read(sums, stride, index, s):
    return ptx.ld_shared_cluster_f32(sums, index, s)


#: sum_partials(partial, splits, stride, index): partial[0, index] + ... + partial[splits - 1, index]
#: for a flat [splits, stride] workspace.
sum_partials = _adder(_workspace_read)
#: sum_cluster(sums, splits, 0, index): sums[index] of blocks 0, ..., splits - 1 of this cluster (their
#: shared arrays `sums`); call after `ptx.cluster_sync`, with its 0 added to `index`.
sum_cluster = _adder(_cluster_read)


@cuda.jit(device=True, inline="always")
def cluster_share(count, splits, rank):
    """(first, end): the slice of a tile's `count` sums that block `rank` of a cluster of `splits` adds up."""
    per = (count + splits - 1) // splits
    return min(count, rank * per), min(count, (rank + 1) * per)

