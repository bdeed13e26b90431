"""Split-K's adders: reading eight partial sums at a time (read_eight, then add_eight, for several
outputs at once) adds the same numbers in the same order as sum_partials, so the same bits, for
split counts below, at and past 8. Runs in the simulator and on a GPU."""
import pytest
import torch
from numba import cuda, float32

from labkit.kernels import launch as L
from labkit.kernels import splitk


@L.kernel(threads=32)
def both_ways(partial, splits, stride, plain, batched):
    i = cuda.threadIdx.x
    v = cuda.local.array(8, float32)
    if i < stride:
        plain[i] = splitk.sum_partials(partial, splits, stride, i)
        total = float32(0.0)
        for first in range(0, splits, 8):
            splitk.read_eight(partial, splits, first, stride, i, v, 0)
            total = splitk.add_eight(v, 0, splits - first, total)
        batched[i] = total


@pytest.mark.parametrize("splits", [1, 3, 8, 9, 17])
def test_read_eight_and_add_eight_give_sum_partials_bits(splits):
    stride = 24
    gen = torch.Generator().manual_seed(splits)
    partial = (torch.randn(splits, stride, generator=gen) * 10 ** torch.randint(-3, 4, (splits, stride), generator=gen))
    partial[:, 0] = -0.0   # a column of negative zeros: +0 + -0 is +0, whichever way it is added
    partial[0, 1], partial[-1, 1] = 1e8, -1e8   # the order decides what survives rounding
    partial = partial.float().to(L.device()).contiguous()
    plain = torch.full((stride,), float("nan"), device=L.device())
    batched = torch.full((stride,), float("nan"), device=L.device())
    L.launch(both_ways, (1,), (32,), partial.view(-1), splits, stride, plain, batched)
    assert torch.equal(plain.cpu().view(torch.int32), batched.cpu().view(torch.int32))
    # and it is the sum (but column 1, whose small terms rounding absorbs)
    assert torch.allclose(plain.cpu().double()[2:], partial.cpu().double().sum(0)[2:], rtol=1e-5, atol=1e-2)
