"""AWQ and SmoothQuant on tiny models with planted activation outliers."""
import copy

import pytest
import torch

from labkit.quant import awq, smoothquant
from labkit.quant.calib import LayerRunner, scale_groups
from labkit.quant.qlinear import QuantLinear, quantize_linears, simulate

from .conftest import tiny_ids, tiny_model

TEXT = "The quick brown fox jumps over the lazy dog; a calibration text made of bytes. " * 20


def output_error(model, reference, ids) -> float:
    with torch.no_grad():
        want = reference(ids)
        return ((model(ids) - want).norm() / want.norm()).item()


@pytest.mark.parametrize("gqa", [True, False])
def test_folding_scales_keeps_the_function(gqa):
    model = tiny_model(num_key_value_heads=2 if gqa else 4)
    ids = tiny_ids(16)
    before = model(ids).detach()
    torch.manual_seed(3)
    for layer in model.model.layers:
        for group in scale_groups(layer, model.config):
            n = group.producer.weight.shape[0]
            group.fold(torch.rand(n) * 4 + 0.25)
    torch.testing.assert_close(model(ids).detach(), before, rtol=1e-4, atol=1e-4)


def test_alpha_zero_is_plain_rtn_and_search_never_loses():
    model = tiny_model(outliers=True)
    runner = LayerRunner(model, tiny_ids(64, batch=2))
    layer = model.model.layers[0]
    inputs, _ = runner.capture(layer)
    group = scale_groups(layer, model.config, runner.rope)[1]  # MLP input
    x = inputs["gate_proj"]
    before = [lin.weight.clone() for lin in group.consumers]
    s, alpha, losses = awq.search_scale(group, x, 4, 32, n_grid=10)
    assert all(torch.equal(a, lin.weight) for a, lin in zip(before, group.consumers))  # weights restored
    with torch.no_grad():
        mlp = layer.mlp
        want = mlp(x)
        rtn = torch.nn.functional.linear
        gate, up = (rtn(x, simulate(lin.weight, 4, 32)) for lin in group.consumers)
        rtn_loss = (mlp.down_proj(torch.nn.functional.silu(gate) * up) - want).pow(2).mean().item()
    assert losses[0] == pytest.approx(rtn_loss, rel=1e-5)
    assert min(losses) <= losses[0] and alpha > 0  # outlier channels: protecting them pays
    assert s.shape == (64,)


def test_awq_scales_are_normalized():
    s = awq.awq_scales(torch.tensor([0.1, 1.0, 10.0, 100.0]), 0.5)
    assert s.max() * s.min() == pytest.approx(1.0)
    assert torch.all(s[1:] > s[:-1])


def test_clip_search_never_increases_the_group_error():
    torch.manual_seed(0)
    w, x = torch.randn(16, 64), torch.randn(200, 64)
    w[0, 3] = 12.0  # an outlier weight worth clipping
    limit = awq.search_clip(w, x, 4, 32, n_grid=20)
    assert limit.shape == (16, 2) and (limit <= w.view(16, 2, 32).abs().amax(-1) + 1e-6).all()
    assert limit[0, 0] < 12.0
    clipped = torch.nn.Linear(64, 16, bias=False)
    clipped.weight.data = w.clone()
    awq.apply_clip(clipped, limit, 32)
    err = lambda m: (x @ simulate(m, 4, 32).t() - x @ w.t()).pow(2).mean()
    assert err(clipped.weight) <= err(w)


@pytest.fixture(scope="module")
def awq_pair():
    """(fp model, AWQ W4 g32 model, RTN W4 g32 model), calibrated once for this module."""
    from .conftest import ByteTokenizer

    fp = tiny_model(outliers=True)
    model = copy.deepcopy(fp)
    report = awq.awq_quantize(model, ByteTokenizer(), TEXT, 4, 32, n_grid=10, n_samples=2, seqlen=128)
    return fp, model, quantize_linears(copy.deepcopy(fp), 4, 32), report


def test_awq_beats_rtn_with_outliers(awq_pair):
    fp, model, rtn_model, report = awq_pair
    ids = tiny_ids(64, batch=2, seed=5)
    assert output_error(model, fp, ids) < 0.8 * output_error(rtn_model, fp, ids)
    assert len(report.alphas) == 2 and set(report.alphas[0]) == {"attn_in", "mlp_in", "v_o", "up_down"}
    assert all(isinstance(m, QuantLinear) for n, m in model.named_modules() if n.endswith("_proj"))


def test_smoothquant_beats_naive_w8a8_and_smoothing_is_exact():
    from .conftest import ByteTokenizer

    fp = tiny_model(outliers=True)
    ids = tiny_ids(64, batch=2, seed=5)
    smoothed = smoothquant.smooth(copy.deepcopy(fp), ByteTokenizer(), TEXT, 0.5, n_samples=2, seqlen=128)
    assert output_error(smoothed, fp, ids) < 1e-4
    sq = smoothquant.smoothquant_w8a8(copy.deepcopy(fp), ByteTokenizer(), TEXT, 0.5, n_samples=2, seqlen=128)
    naive = smoothquant.naive_w8a8(copy.deepcopy(fp))
    assert output_error(sq, fp, ids) < 0.7 * output_error(naive, fp, ids)


def test_already_quantized_model_is_refused():
    from labkit.errors import UserError

    from .conftest import ByteTokenizer

    with pytest.raises(UserError, match="already"):
        awq.awq_quantize(quantize_linears(tiny_model(), 4, 32), ByteTokenizer(), TEXT, 4, 32)
