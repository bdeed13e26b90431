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


@pytest.mark.parametrize("fmt, dtype", [(None, torch.float32), ("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_float_formats(model, fmt, dtype):
    out = weights.convert(model, fmt)
    assert out.model.embed_tokens.weight.dtype == dtype and not weights.is_quantized(out)
    assert out.inv_freq.dtype == torch.float32   # rotary angles stay float32: bfloat16 positions drift


def test_a_quantized_checkpoint_runs_as_stored_repacked(model):
    quantized = weights.convert(quantize_linears(model, 4, 32), None)
    assert isinstance(quantized.model.layers[0].mlp.down_proj, PackedLinear)
    with pytest.raises(ValueError, match="quantized checkpoint already"):
        weights.convert(quantized, "int8")


@pytest.mark.parametrize("fmt, bits", [("int4", 4), ("int8", 8)])
def test_rtn_formats_pack_every_linear_and_the_head(model, fmt, bits):
    # every projection the model has (7 per layer, or 4 once an engine merged q/k/v and gate/up
    # in the shared fixture) and the tied head
    linears = {name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)} | {"lm_head"}
    assert len(linears) >= 2 * 4 + 1
    out = weights.convert(model, fmt)
    packed = {name: m for name, m in out.named_modules() if isinstance(m, PackedLinear)}
    assert set(packed) == linears and all(m.bits == bits for m in packed.values())
    assert isinstance(out.lm_head, PackedLinear) and out.model.embed_tokens.weight.dtype == torch.bfloat16


def test_unknown_format_is_refused(model):
    with pytest.raises(ValueError, match="weights must be one of"):
        weights.convert(model, "int3")
