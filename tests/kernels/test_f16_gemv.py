"""The fp16 GEMV, plain and with its fusions (RMSNorm or SiLU(gate) * up in the prologue, the
residual add in the epilogue), against torch computing the same layer in float64, on small odd
shapes: rows past N in the last warp, K not a multiple of a warp's step (chunks read past the
end must add nothing), one chunk per lane. Tolerances come from the numerics (f16_gemv.check
says which); outputs start as NaN."""
import pytest
import torch

from labkit.kernels import f16_gemv, launch, measure

FP16_LEVEL = 8 * measure.U16
VARIANTS = [(p, r) for p in f16_gemv.PROLOGUES for r in (False, True)]


@pytest.mark.parametrize("prologue, residual", VARIANTS)
@pytest.mark.parametrize("n, k, tile", [
    (10, 600, (2, 2, 2)),   # 75 chunks: two passes of 64, the second mostly past K; 10 rows in blocks of 4
    (5, 256, (3, 1, 1)),    # one chunk per lane, 3 rows per warp: the second warp's last row is past N
])
def test_matches_float64(prologue, residual, n, k, tile, seed):
    assert f16_gemv.check(n, k, tile, seed=seed, prologue=prologue, residual=residual) <= FP16_LEVEL


def test_tiles_agree_bit_for_bit(seed):
    """Rows, unroll and warps per block change who computes a row, not what: a row's sums run over
    the same chunks in the same lanes whatever the tile, so every tile gives the same bits."""
    gen = torch.Generator().manual_seed(seed)
    dev = launch.device()
    weight = (torch.randn(12, 512, generator=gen) / 16).half().to(dev)
    x = torch.randn(512, generator=gen).half().to(dev)
    first = f16_gemv.f16_gemv(x, weight, tile=(1, 1, 1))
    for tile in ((2, 2, 1), (4, 1, 2)):
        assert torch.equal(f16_gemv.f16_gemv(x, weight, tile=tile), first)


def test_residual_is_added_once_as_torch_adds(seed):
    gen = torch.Generator().manual_seed(seed)
    dev = launch.device()
    weight = (torch.randn(8, 256, generator=gen) / 16).half().to(dev)
    x = torch.randn(2 * 256, generator=gen).half().to(dev)
    res = (torch.randn(8, generator=gen) * 8).half().to(dev)
    plain = f16_gemv.f16_gemv(x, weight, tile=(2, 1, 1), prologue="silu_mul")
    fused = f16_gemv.f16_gemv(x, weight, tile=(2, 1, 1), prologue="silu_mul", residual=res)
    assert torch.equal(fused, plain + res)


def test_rejects_what_it_cannot_run():
    dev = launch.device()
    weight = torch.zeros(32, 96).half().to(dev)
    x = torch.zeros(96).half().to(dev)
    with pytest.raises(ValueError, match="prologue must be one of"):
        f16_gemv.f16_gemv(x, weight, prologue="gelu")
    with pytest.raises(ValueError, match="norm exactly with prologue 'rmsnorm'"):
        f16_gemv.f16_gemv(x, weight, prologue="rmsnorm")
    with pytest.raises(ValueError, match="192 elements"):
        f16_gemv.f16_gemv(x, weight, prologue="silu_mul")
    with pytest.raises(ValueError, match="fp16 of 96 and 32 elements"):
        f16_gemv.f16_gemv(x, weight, residual=torch.zeros(16).half().to(dev))
    with pytest.raises(ValueError, match="K % 8 == 0"):
        f16_gemv.f16_gemv(x[:90], weight[:, :90].contiguous())
    with pytest.raises(ValueError, match="1 <= unroll <= 8"):
        f16_gemv.f16_gemv(x, weight, tile=(1, 16, 1))
