"""Thread-block clusters: the primitives of ptx.py (cluster barrier, reads of another block's shared
memory) in a small kernel, and the W4A16 GEMV adding up its blocks along K inside a cluster, which
must give the bits of the split-K workspace. In the simulator clusters are single blocks (it runs
blocks one after another); on a GPU of compute capability 9.0 the clusters hold up to 8 blocks."""
import pytest
import torch
from numba import cuda, float32

from labkit.kernels import launch as L
from labkit.kernels import ptx, w4a16_gemv
from labkit.kernels.packing import random_int4_layer

THREADS = 32
HOPPER = not L.SIMULATOR and torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 9
SIZES = (1, 2, 8) if HOPPER else (1,)


@L.kernel(threads=THREADS)
def pass_around(size, out):
    """Block r of each cluster of `size` blocks (along y) leaves 1000 * blockIdx.y + thread in its
    shared memory, then reads that of block (r + 1) % size of its cluster."""
    mine = cuda.shared.array(THREADS, float32)
    t, b = cuda.threadIdx.x, cuda.blockIdx.y
    mine[t] = float32(1000 * b + t)
    ready = ptx.cluster_sync()
    out[b * THREADS + t] = ptx.ld_shared_cluster_f32(mine, t + ready, (b % size + 1) % size)
    ptx.cluster_sync()


@pytest.mark.parametrize("size", SIZES)
def test_blocks_read_each_others_shared_memory(size):
    blocks = 2 * size
    out = torch.full((blocks * THREADS,), -1.0, device=L.device())
    L.launch(pass_around, (1, blocks), (THREADS, 1), size, out, cluster=(1, size, 1))
    b = torch.arange(blocks).repeat_interleave(THREADS)
    t = torch.arange(THREADS).repeat(blocks)
    partner = b - b % size + (b % size + 1) % size
    assert torch.equal(out.cpu(), (1000 * partner + t).float())


def _layer(prologue, n, k, g, gen):
    dev = L.device()
    x = torch.randn(2 * k if prologue == "silu_mul" else k, generator=gen).half().to(dev)
    norm = (torch.rand(k, generator=gen) + 0.5).half().to(dev) if prologue == "rmsnorm" else None
    res = (torch.randn(n, generator=gen) * 4).half().to(dev)
    return x, random_int4_layer(n, k, g, dev, gen), norm, res


#: (N, K, tile) with 1 block along K in the simulator; on a GPU the 7B o and q/k/v shapes at their
#: plans (8 and 4 blocks along K) and a small tile with 5.
SHAPES = ([(4096, 4096, None), (12288, 4096, None), (256, 640, (4, 4, 4, 3, 2, 4))] if HOPPER
          else [(96, 32, (2, 2, 2, 2, 1, 4)), (40, 64, (2, 8, 1, 2, 1, 1))])


@pytest.mark.parametrize("prologue", w4a16_gemv.PROLOGUES)
@pytest.mark.parametrize("n, k, tile", SHAPES)
def test_cluster_sums_give_the_bits_of_the_workspace(prologue, n, k, tile, seed):
    gen = torch.Generator().manual_seed(seed)
    g = 32 if L.SIMULATOR else 128
    x, layer, norm, res = _layer(prologue, n, k, g, gen)
    got = {c: w4a16_gemv.w4a16_gemv(x, *layer, g, out=torch.full((n,), float("nan"), dtype=torch.float16,
                                                                 device=x.device),
                                    tile=tile, prologue=prologue, norm=norm, residual=res, cluster=c)
           for c in (False, True)}
    assert not torch.isnan(got[True]).any()
    assert torch.equal(got[True], got[False])


def test_cluster_error_past_the_largest():
    dev = L.device()
    layer = random_int4_layer(64, 128, 32, dev)
    x = torch.zeros(128).half().to(dev)
    with pytest.raises(ValueError, match="a cluster holds at most .* blocks along K here, got 16"):
        w4a16_gemv.w4a16_gemv(x, *layer, 32, tile=(1, 1, 1, 2, 1, 4), cluster=True)
