"""The W4A16 GEMV with its fusions (RMSNorm or SiLU(gate) * up in the prologue, the residual add
in the epilogue) against torch computing the same layer as the model does, on small odd shapes:
partial column tiles, K over uneven blocks, split-K. Tolerances come from the numerics
(w4a16_gemv.check says which); outputs start as NaN."""
import pytest
import torch

from labkit.kernels import launch, measure, w4a16_gemv
from labkit.kernels.packing import random_int4_layer

FP16_LEVEL = 8 * measure.U16
VARIANTS = [(p, r) for p in w4a16_gemv.PROLOGUES for r in (False, True) if (p, r) != ("none", False)]


@pytest.mark.parametrize("prologue, residual", VARIANTS)
@pytest.mark.parametrize("n, k, g, tile", [
    (96, 192, 64, (2, 2, 2, 2, 1, 4)),   # N = 96: a partial tile of 64 columns; K over 3 blocks (split-K)
    (64, 80, 16, (1, 2, 2, 3, 1, 4)),    # K = 5 runs of 16 rows in blocks of 2: the last block half empty
    (40, 128, 32, (2, 2, 2, 2, 1, 1)),   # 4-byte loads: N = 5 words in tiles of 2, split-K
])
def test_fused_variants(prologue, residual, n, k, g, tile, seed):
    assert w4a16_gemv.check(n, k, g, tile, seed=seed, prologue=prologue, residual=residual) <= FP16_LEVEL


@pytest.mark.parametrize("prologue", ["rmsnorm", "silu_mul"])
def test_fused_whole_warps(prologue, seed):
    """32 threads per block: the row's sum of squares adds up by warp shuffles, as on a GPU."""
    assert w4a16_gemv.check(64, 512, 64, (1, 32, 1, 2, 1, 2), seed=seed, prologue=prologue, residual=True) <= FP16_LEVEL


@pytest.mark.parametrize("prologue", w4a16_gemv.PROLOGUES)
def test_residual_is_added_once_as_torch_adds(prologue, seed):
    """With split-K (3 blocks along K) the residual variant gives exactly the bits of the same GEMV
    without it, plus the residual in fp16 torch: added once, after the reduction, rounded once."""
    gen = torch.Generator().manual_seed(seed)
    dev = launch.device()
    n, k, g, tile = 96, 192, 64, (2, 2, 2, 2, 1, 4)
    layer = random_int4_layer(n, k, g, dev, gen)
    x = torch.randn(2 * k if prologue == "silu_mul" else k, generator=gen).half().to(dev)
    norm = (torch.rand(k, generator=gen) + 0.5).half().to(dev) if prologue == "rmsnorm" else None
    res = (torch.randn(n, generator=gen) * 8).half().to(dev)
    plain = w4a16_gemv.w4a16_gemv(x, *layer, g, tile=tile, prologue=prologue, norm=norm)
    fused = w4a16_gemv.w4a16_gemv(x, *layer, g, tile=tile, prologue=prologue, norm=norm, residual=res)
    assert torch.equal(fused, plain + res)


def test_fused_rejects_what_it_cannot_run():
    dev = launch.device()
    layer = random_int4_layer(64, 96, 32, dev)
    x = torch.zeros(96).half().to(dev)
    with pytest.raises(ValueError, match="prologue must be one of"):
        w4a16_gemv.w4a16_gemv(x, *layer, 32, prologue="gelu")
    with pytest.raises(ValueError, match="norm exactly with prologue 'rmsnorm'"):
        w4a16_gemv.w4a16_gemv(x, *layer, 32, prologue="rmsnorm")
    with pytest.raises(ValueError, match="192 elements"):
        w4a16_gemv.w4a16_gemv(x, *layer, 32, prologue="silu_mul")
    with pytest.raises(ValueError, match="fp16 of 96 and 64 elements"):
        w4a16_gemv.w4a16_gemv(x, *layer, 32, residual=torch.zeros(32).half().to(dev))
