"""KV-cache quantization: layout, error, and that evaluation measures what decoding computes."""
import pytest
import torch

from labkit.models.llama import KVCache
from labkit.quant.kv import FakeQuantKV, QuantKVCache, dequantize_kv, kv_bytes_per_token, quantize_kv

from .conftest import tiny_config, tiny_ids, tiny_model


@pytest.mark.parametrize("bits, width", [(8, 64), (4, 32)])
def test_layout_and_error(bits, width):
    x = torch.randn(2, 5, 3, 64) * torch.linspace(0.1, 10, 5)[None, :, None, None]  # tokens of very different size
    codes, params = quantize_kv(x, bits)
    assert codes.dtype == torch.uint8 and codes.shape == (2, 5, 3, width)
    assert params.dtype == torch.float16 and params.shape == (2, 5, 3, 2)
    back = dequantize_kv(codes, params, bits)
    scale = params[..., :1].float()
    assert ((back - x).abs() <= 0.51 * scale + 1e-3 * x.abs()).all()  # half a step, per token and head


def test_int4_element_2i_is_the_low_nibble():
    x = torch.tensor([[0.0, 15.0] + [0.0] * 6])  # scale 1, zero 0: codes are the values
    codes, _ = quantize_kv(x, 4)
    assert codes[0, 0].item() == 0 | (15 << 4)


def test_fake_quantized_eval_equals_token_by_token_decoding():
    """FakeQuantKV on a whole window computes what a quantized cache gives when decoding."""
    model, ids = tiny_model(), tiny_ids(12)
    with torch.no_grad():
        whole = model(ids, cache=FakeQuantKV(8))
        cache = QuantKVCache(model.config, 1, 16, policy=8)
        steps = torch.cat([model(ids[:, i:i + 1], cache=cache) for i in range(12)], dim=1)
        float_steps = KVCache(model.config, 1, 16, torch.float32)
        plain = torch.cat([model(ids[:, i:i + 1], cache=float_steps) for i in range(12)], dim=1)
    torch.testing.assert_close(steps, whole, rtol=1e-4, atol=1e-4)
    assert 0 < (steps - plain).abs().max() < 0.05


@pytest.mark.parametrize("policy, limit", [(8, 0.01), (4, 0.2)])
def test_quantized_cache_stays_close(policy, limit):
    model, ids = tiny_model(), tiny_ids(32)
    with torch.no_grad():
        ref, got = model(ids), model(ids, cache=FakeQuantKV(policy))
    assert (got - ref).norm() / ref.norm() < limit


def test_bytes_per_token():
    config = tiny_config()  # 2 layers, 2 KV heads, head_dim 16
    assert kv_bytes_per_token(config, 0) == 2 * 2 * 2 * 16 * 2
    assert kv_bytes_per_token(config, 8) == 2 * 2 * 2 * (16 + 4)
    assert kv_bytes_per_token(config, 4) == 2 * 2 * 2 * (8 + 4)
    cache = QuantKVCache(config, 1, 10, policy=4)
    assert cache.nbytes == 10 * kv_bytes_per_token(config, 4)


def test_bad_policy():
    with pytest.raises(ValueError, match="quant_policy"):
        FakeQuantKV(2)
