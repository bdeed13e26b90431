"""Round-to-nearest: granularities, symmetric vs asymmetric, error bounds, bad arguments."""
import pytest
import torch

from labkit.quant import rtn


@pytest.fixture
def w():
    return torch.randn(16, 256, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("group_size, groups", [(rtn.PER_TENSOR, 1), (rtn.PER_CHANNEL, 1), (64, 4), (32, 8)])
def test_shapes_per_granularity(w, group_size, groups):
    qw = rtn.quantize(w, 4, group_size)
    assert qw.q.shape == w.shape
    rows = 1 if group_size == rtn.PER_TENSOR else 16
    assert qw.scale.shape == qw.zero.shape == (rows, groups)
    assert qw.dequantize().shape == w.shape


@pytest.mark.parametrize("sym", [False, True])
@pytest.mark.parametrize("bits", [8, 4, 3])
def test_error_is_at_most_half_a_step(w, bits, sym):
    qw = rtn.quantize(w, bits, 64, sym=sym)
    step = qw.scale.repeat_interleave(64, dim=1)
    assert ((qw.dequantize() - w).abs() <= step / 2 + 1e-6).all()
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if sym else (0, 2**bits - 1)
    assert qw.q.min() >= lo and qw.q.max() <= hi


def test_finer_groups_and_more_bits_are_more_accurate(w):
    w = w.clone()
    w[:, 5] *= 20  # one outlier input channel spoils its group's scale
    errors = [rtn.quantization_error(w, 4, g) for g in (rtn.PER_TENSOR, rtn.PER_CHANNEL, 128, 32)]
    assert errors == sorted(errors, reverse=True)
    assert rtn.quantization_error(w, 8, 128) < rtn.quantization_error(w, 4, 128) / 10
    assert rtn.quantization_error(w, 3, 128) > rtn.quantization_error(w, 4, 128)


def test_asymmetric_beats_symmetric_on_shifted_weights(w):
    shifted = w.abs()  # all positive: a symmetric grid wastes half its codes
    assert rtn.quantization_error(shifted, 4, 64) < rtn.quantization_error(shifted, 4, 64, sym=True)


def test_values_on_the_grid_are_exact():
    scale = 0.125
    w = (torch.randint(0, 16, (4, 32)) - 7).float() * scale
    w[:, 0], w[:, 1] = -7 * scale, 8 * scale  # every group spans the same 15 steps
    assert torch.equal(rtn.fake_quantize(w, 4, 32), w)


def test_float16_scales_reproduce_the_codes(w):
    qw = rtn.quantize(w, 4, 64, scale_dtype=torch.float16)
    assert torch.equal(qw.scale, qw.scale.half().float())


@pytest.mark.parametrize("kwargs, message", [
    (dict(group_size=100), "does not divide"),
    (dict(bits=5), "not supported"),
])
def test_bad_arguments(w, kwargs, message):
    with pytest.raises(ValueError, match=message):
        rtn.quantize(w, **{"bits": 4, "group_size": 64, **kwargs})
