"""Merged projections (labkit.engine.fuse) compute what the separate layers computed: for
float layers, int4 / int8 QuantLinear (concatenated codes, zeros and scales) and W8A8."""
import copy

import pytest
import torch
from torch import nn

from labkit.engine.fuse import concat_linears, fuse_projections
from labkit.models.llama import Llama, LlamaConfig, linear_layers
from labkit.quant.qlinear import QuantLinear


def tiny(model_type: str = "llama") -> Llama:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, model_type=model_type,
                      attention_bias=model_type == "qwen2")
    model = Llama(cfg).double().eval()
    if cfg.attention_bias:
        with torch.no_grad():
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_()
    return model


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
def test_fused_model_gives_the_same_logits(model_type):
    model = tiny(model_type)
    ids = torch.randint(0, 96, (2, 11), generator=torch.Generator().manual_seed(1))
    want = model(ids)
    fused = fuse_projections(copy.deepcopy(model))
    attn, mlp = fused.model.layers[0].self_attn, fused.model.layers[0].mlp
    assert not hasattr(attn, "q_proj") and not hasattr(mlp, "up_proj")
    assert [n.split(".")[-1] for n, _, _ in linear_layers(fused)][:3] == ["qkv_proj", "o_proj", "gate_up_proj"]
    # float64: only the order of a few additions can differ
    torch.testing.assert_close(fused(ids), want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("bits, group, act_bits", [(4, 32, 16), (4, -1, 16), (8, 32, 16), (8, -1, 8)])
def test_concatenated_quant_linears_match_the_parts(bits, group, act_bits):
    torch.manual_seed(0)
    parts = [QuantLinear.from_linear(nn.Linear(64, n, bias=True), bits, group, act_bits) for n in (32, 16, 16)]
    merged = concat_linears(parts)
    assert merged.out_features == 64 and merged.nbytes == sum(p.nbytes for p in parts)
    x = torch.randn(3, 64)
    want = torch.cat([p(x) for p in parts], -1)
    if act_bits == 8:   # activations are quantized per row: the same codes whatever N is
        torch.testing.assert_close(merged(x), want, rtol=1e-6, atol=1e-6)
    else:   # the same dequantized weights, bit for bit
        assert torch.equal(merged.dequantize(), torch.cat([p.dequantize() for p in parts]))
        torch.testing.assert_close(merged(x), want, rtol=1e-6, atol=1e-6)


def test_layers_of_different_formats_stay_apart():
    model = tiny()
    attn = model.model.layers[0].self_attn
    attn.q_proj = QuantLinear.from_linear(attn.q_proj.float(), 4, 32)
    fuse_projections(model)
    assert attn.qkv_proj is None and isinstance(attn.q_proj, QuantLinear)
    assert model.model.layers[0].mlp.gate_up_proj is not None
    with pytest.raises(ValueError, match="same input"):
        QuantLinear.concat([QuantLinear(64, 32, 4, 32), QuantLinear(64, 32, 4, 64)])
