"""The int4 packing every part of labkit shares (docs/internals.md), checked against an
unpacking written out here nibble by nibble, independently of labkit.kernels.packing."""
import pytest
import torch

from labkit.kernels import packing

AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]  # nibble i holds column 8j + AWQ_ORDER[i]


def unpack_by_hand(packed: torch.Tensor) -> torch.Tensor:
    rows, words = packed.shape
    out = torch.empty(rows, words * 8, dtype=torch.int64)
    for r in range(rows):
        for j in range(words):
            word = int(packed[r, j]) & 0xFFFFFFFF
            for i in range(8):
                out[r, 8 * j + AWQ_ORDER[i]] = (word >> (4 * i)) & 0xF
    return out


def test_round_trip_against_independent_unpacking(seed):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (5, 24), generator=gen)
    packed = packing.pack_int4(q)
    assert packed.dtype == torch.int32 and packed.shape == (5, 3)
    assert torch.equal(unpack_by_hand(packed), q)
    assert torch.equal(packing.unpack_int4(packed).long(), q)


def test_known_word():
    # columns 0..7 hold 1..8: nibble i holds column AWQ_ORDER[i], i.e. value AWQ_ORDER[i] + 1
    word = sum((AWQ_ORDER[i] + 1) << (4 * i) for i in range(8))
    packed = packing.pack_int4(torch.arange(1, 9).view(1, 8))
    assert int(packed[0, 0]) & 0xFFFFFFFF == word


def test_high_nibble_makes_negative_int32():
    packed = packing.pack_int4(torch.full((1, 8), 15))
    assert int(packed[0, 0]) == -1


def test_dequantize_formula(seed):
    gen = torch.Generator().manual_seed(seed)
    n, k, g = 16, 64, 32
    qweight, qzeros, scales = packing.random_int4_layer(n, k, g, generator=gen)
    q, z = unpack_by_hand(qweight).double(), unpack_by_hand(qzeros).double()
    wt = (q - z.repeat_interleave(g, 0)) * scales.double().repeat_interleave(g, 0)  # W.T [K, N]
    got = packing.dequantize_int4(qweight, qzeros, scales, g)
    assert got.shape == (n, k) and got.dtype == torch.float16
    assert torch.equal(got.double(), wt.t().half().double())


def test_quantize_error_is_at_most_one_step(seed):
    # half a step from rounding, plus up to half a step at the ends of a group's range, where
    # the integer zero point has shifted the grid and codes clamp to [0, 15]
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(24, 96, generator=gen)
    qweight, qzeros, scales = packing.quantize_int4(w, 32)
    err = (packing.dequantize_int4(qweight, qzeros, scales.float(), 32) - w).abs()
    step = scales.float().repeat_interleave(32, 0).t()
    assert bool((err <= step * (1 + 1e-3)).all())
    assert float((err <= 0.5 * step * (1 + 1e-3)).float().mean()) > 0.95  # inside the range: half a step


@pytest.mark.parametrize("bad", [torch.full((2, 8), 16), torch.full((2, 8), -1), torch.zeros(2, 6)])
def test_pack_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        packing.pack_int4(bad)
