"""`LLM(weights=...)` / `--weights`: what each choice converts, and what it leaves alone."""
import copy

import pytest
import torch

from labkit.engine import weights
from labkit.quant.cpu import PackedLinear
from labkit.quant.qlinear import quantize_linears


@pytest.fixture
def model(tiny):
    return copy.deepcopy(tiny).float()


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bf16_only_for_a_full_precision_model_on_a_cpu_with_bf16(model, monkeypatch, native):
    monkeypatch.setattr(weights, "cpu_has_bf16", lambda: native)
    out = weights.convert(model, "auto")
    assert out.model.embed_tokens.weight.dtype == (torch.bfloat16 if native else torch.float32)
    assert out.inv_freq.dtype == torch.float32   # rotary angles stay float32: bfloat16 positions drift


def test_auto_leaves_a_quantized_checkpoint_as_stored_and_repacks_it(model, monkeypatch):
    monkeypatch.setattr(weights, "cpu_has_bf16", lambda: True)
    quantized = weights.convert(quantize_linears(model, 4, 32), "auto")
    assert isinstance(quantized.model.layers[0].mlp.down_proj, PackedLinear)
    with pytest.raises(ValueError, match="quantized checkpoint already"):
        weights.convert(quantized, "int8")


@pytest.mark.parametrize("fmt, bits", [("int4", 4), ("int8", 8)])
def test_rtn_formats_pack_every_linear_and_the_head(model, fmt, bits):
    out = weights.convert(model, fmt)
    packed = [m for m in out.modules() if isinstance(m, PackedLinear)]
    assert len(packed) == 2 * 7 + 1 and all(m.bits == bits for m in packed)
    assert isinstance(out.lm_head, PackedLinear) and out.model.embed_tokens.weight.dtype == torch.bfloat16


def test_unknown_format_is_refused(model):
    with pytest.raises(ValueError, match="weights must be one of"):
        weights.convert(model, "int3")
