"""QuantLinear: the stored layout, the torch path, padding, W8A8, memory."""
import pytest
import torch
from torch import nn

from labkit.kernels.packing import unpack_int4
from labkit.models.llama import linear_layers
from labkit.quant import rtn
from labkit.quant.qlinear import (QuantLinear, check_model, int8_matmul, quantize_linears, set_backend, simulate,
                                  w8a8_linear, weight_bytes)

from .conftest import tiny_ids, tiny_model


def linear(k: int, n: int, bias: bool = False, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(k, n, bias=bias)


@pytest.mark.parametrize("bits, group", [(4, 32), (4, 128), (8, 32), (8, -1)])
def test_forward_matches_the_simulated_weight(bits, group):
    lin = linear(128, 64, bias=True)
    q = QuantLinear.from_linear(lin, bits, group)
    x = torch.randn(3, 5, 128)
    want = nn.functional.linear(x, simulate(lin.weight, bits, group), lin.bias)
    torch.testing.assert_close(q(x), want, rtol=1e-5, atol=1e-5)
    tol = 0.02 if bits == 8 else 0.2
    assert (q(x) - lin(x)).norm() / lin(x).norm() < tol


def test_int4_layout_is_awq_gemm():
    lin = linear(64, 16)
    q = QuantLinear.from_linear(lin, 4, 32)
    assert q.qweight.dtype == q.qzeros.dtype == torch.int32 and q.scales.dtype == torch.float16
    assert q.qweight.shape == (64, 2) and q.qzeros.shape == (2, 2) and q.scales.shape == (2, 16)
    codes = rtn.quantize(lin.weight, 4, 32, scale_dtype=torch.float16)
    assert torch.equal(unpack_int4(q.qweight).long(), codes.q.t().long())       # [K, N], W transposed
    assert torch.equal(unpack_int4(q.qzeros).float(), codes.zero.t())
    assert torch.equal(q.scales.float(), codes.scale.t())


def test_group_that_does_not_divide_pads_the_input():
    lin = linear(96, 16)  # 96 = 64 + 32: group 64 gives one full and one half group
    q = QuantLinear.from_linear(lin, 4, 64)
    assert q.padded_in == 128 and q.qweight.shape == (128, 2) and q.scales.shape == (2, 16)
    assert torch.equal(q.dequantize()[:, 96:], torch.zeros(16, 32))
    # padding changes nothing for the real columns: the same codes as quantizing [64 | 32] groups alone
    alone = lambda w, g: rtn.quantize(w, 4, g, scale_dtype=torch.float16).dequantize()
    first, last = alone(lin.weight[:, :64], 64), alone(lin.weight[:, 64:], 32)
    assert torch.equal(q.dequantize()[:, :96], torch.cat([first, last], 1))
    x = torch.randn(2, 96)
    torch.testing.assert_close(q(x), x @ q.dequantize()[:, :96].t())


def test_int8_matmul_is_exact():
    a = torch.randint(-127, 128, (32, 64), dtype=torch.int8)
    b = torch.randint(-127, 128, (24, 64), dtype=torch.int8)
    assert torch.equal(int8_matmul(a, b), (a.long() @ b.long().t()).int())
    assert torch.equal(int8_matmul(a[:3], b), (a[:3].long() @ b.long().t()).int())  # small M: reference path


def test_w8a8_close_to_float_without_outliers():
    lin = linear(64, 32)
    q = QuantLinear.from_linear(lin, 8, -1, act_bits=8)
    x = torch.randn(20, 64)
    assert (q(x) - lin(x)).norm() / lin(x).norm() < 0.02
    torch.testing.assert_close(q(x), w8a8_linear(x, q.qweight, q.scales))


def test_memory_report():
    model = tiny_model()
    fp16 = weight_bytes(model)
    quantize_linears(model, 4, 32)
    layers = [m for m in model.modules() if isinstance(m, QuantLinear)]
    assert len(layers) == 14
    # int4 codes: K * N / 2 bytes, plus scales (2 B) and packed zeros (0.5 B) per group and column
    q = layers[0]
    assert q.nbytes == 64 * 64 // 2 + 2 * 64 * 2 + 2 * 64 // 2
    assert weight_bytes(model) < fp16 * 0.75


def test_numba_backend_on_cpu_tensors_uses_torch():
    model = tiny_model()
    ids = tiny_ids(8)
    quantize_linears(model, 4, 32)
    want = model(ids)
    set_backend(model, "numba")
    assert torch.equal(model(ids), want)
    assert all(m.backend == "numba" for m in model.modules() if isinstance(m, QuantLinear))


def test_the_engine_hands_numba_layers_its_kernel_op():
    from labkit.engine import ops
    from labkit.quant.qlinear import numba_kernel

    layers = nn.ModuleList([QuantLinear(64, 32, 4, 32, backend=backend) for backend in ("numba", "torch")]
                           + [QuantLinear(64, 32, 8, -1, act_bits=8, backend="numba")])
    ops.route_quant_linears(layers)
    assert [m.kernel for m in layers] == [ops.quant_linear, numba_kernel, numba_kernel]
    assert QuantLinear.concat([layers[0], layers[0]]).kernel is ops.quant_linear


@pytest.mark.parametrize("bits, group, act, message", [
    (3, 32, 16, "3-bit"), (4, 48, 16, "power of two"), (4, 32, 8, "W8A8"),
])
def test_unsupported_layouts(bits, group, act, message):
    with pytest.raises(ValueError, match=message):
        check_model(tiny_model().config, bits, group, act)


def test_quantize_linears_skips_the_head():
    model = quantize_linears(tiny_model(), 8, 32)
    assert isinstance(model.lm_head, nn.Linear)
    assert all(isinstance(getattr(p, a), QuantLinear) for _, p, a in linear_layers(model))


@pytest.mark.parametrize("bits, group", [(4, 32), (8, -1)])
def test_a_quantized_model_has_as_many_parameters_as_its_float_self(bits, group):
    from labkit.models.llama import parameter_count

    model = tiny_model()
    before = parameter_count(model)
    quantize_linears(model, bits=bits, group_size=group)
    assert parameter_count(model) == before
