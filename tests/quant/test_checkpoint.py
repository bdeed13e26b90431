"""Checkpoints: the AutoAWQ gemm layout checked by an independent unpacking, loading, errors."""
import json

import pytest
import torch
from safetensors.torch import load_file

from labkit.errors import UserError
from labkit.quant import rtn
from labkit.quant.checkpoint import save_quantized
from labkit.quant.qlinear import QuantLinear, quantize_linears

from .conftest import tiny_ids, tiny_model


def fp16_embedding(model):
    """Checkpoints store the embedding in float16; round the in-memory model the same way."""
    model.model.embed_tokens.weight.data = model.model.embed_tokens.weight.data.half().float()
    return model


def unpack_awq(packed: torch.Tensor) -> torch.Tensor:
    """Written from the AutoAWQ description alone: word j, nibble i holds column 8j + [0,2,4,6,1,3,5,7][i]."""
    order = [0, 2, 4, 6, 1, 3, 5, 7]
    rows, words = packed.shape
    out = torch.empty(rows, words * 8, dtype=torch.int64)
    u = packed.to(torch.int64) & 0xFFFFFFFF
    for j in range(words):
        for i in range(8):
            out[:, 8 * j + order[i]] = (u[:, j] >> (4 * i)) & 0xF
    return out


@pytest.fixture
def saved(tmp_path):
    model = quantize_linears(tiny_model(), 4, 32)
    out = save_quantized(model, tmp_path / "ckpt", "tiny-source", None, "rtn")
    return model, out


def test_awq_gemm_round_trip(saved):
    model, out = saved
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"] == {"quant_method": "awq", "bits": 4, "group_size": 32,
                                             "zero_point": True, "version": "gemm"}
    assert config["labkit"]["source"] == "tiny-source"
    tensors = load_file(out / "model.safetensors")
    w = model.model.layers[0].mlp.down_proj  # K = 128, N = 64
    qweight, qzeros, scales = (tensors[f"model.layers.0.mlp.down_proj.{n}"] for n in ("qweight", "qzeros", "scales"))
    assert qweight.dtype == torch.int32 and qweight.shape == (128, 8) and qzeros.shape == (4, 8)
    assert scales.dtype == torch.float16 and scales.shape == (4, 64)
    # dequantize by the formula of docs/internals.md: W.T[k, n] = (q[k, n] - z[k // g, n]) * s[k // g, n]
    q, z = unpack_awq(qweight).float(), unpack_awq(qzeros).float()
    wt = (q - z.repeat_interleave(32, 0)) * scales.float().repeat_interleave(32, 0)
    assert torch.equal(wt.t(), w.dequantize())
    assert "lm_head.weight" not in tensors  # tied to the embedding


def test_loaded_model_computes_the_same(saved):
    model, out = saved
    from labkit.models.loader import read_config, read_tensors
    from labkit.quant.checkpoint import load_quantized

    loaded = load_quantized(out, read_config(out), read_tensors(out), torch.float32)
    assert isinstance(loaded.model.layers[1].self_attn.k_proj, QuantLinear)
    assert loaded.model.layers[0].self_attn.q_proj.scales.dtype == torch.float16
    ids = tiny_ids(10)
    assert torch.equal(loaded(ids), fp16_embedding(model)(ids))


@pytest.mark.parametrize("bits, group, act", [(8, 32, 16), (8, -1, 8)])
def test_int8_round_trip(tmp_path, bits, group, act):
    from labkit.models.loader import read_config, read_tensors
    from labkit.quant.checkpoint import load_quantized

    model = quantize_linears(tiny_model(), bits, group, act_bits=act)
    out = save_quantized(model, tmp_path / "c", "src", None, "rtn")
    config = read_config(out)
    assert config["quantization_config"] == {"quant_method": "labkit_int8", "bits": 8, "group_size": group,
                                             "activation_bits": act}
    loaded = load_quantized(out, config, read_tensors(out), torch.float32)
    layer = loaded.model.layers[0].mlp.up_proj
    assert layer.qweight.dtype == torch.int8 and layer.act_bits == act
    assert torch.equal(loaded(tiny_ids(8)), fp16_embedding(model)(tiny_ids(8)))


def test_work_dir_rules(saved, tmp_path):
    model, out = saved
    with pytest.raises(UserError, match="not empty"):
        save_quantized(model, out, "x", None, "rtn")
    save_quantized(model, out, "second", None, "rtn", force=True)
    assert json.loads((out / "config.json").read_text())["labkit"]["source"] == "second"
    assert sorted(p.name for p in out.parent.iterdir()) == ["ckpt"]  # no temporary or old folders left


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import labkit.quant.checkpoint as ck

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", boom)
    with pytest.raises(OSError):
        ck.save_quantized(quantize_linears(tiny_model(), 4, 32), tmp_path / "ckpt", "x", None, "rtn")
    assert list(tmp_path.iterdir()) == []


def test_bad_quantization_config_is_one_line(saved):
    from labkit.models.loader import read_config, read_tensors
    from labkit.quant.checkpoint import load_quantized

    _, out = saved
    config = read_config(out)
    config["quantization_config"]["bits"] = 3
    with pytest.raises(UserError, match="unsupported quantization_config"):
        load_quantized(out, config, read_tensors(out), torch.float32)
    config["quantization_config"].update(bits=4, group_size=64)  # tensors made for group 32
    with pytest.raises(UserError, match="do not match"):
        load_quantized(out, config, read_tensors(out), torch.float32)


def test_mixed_layers_cannot_be_saved(tmp_path):
    model = quantize_linears(tiny_model(), 4, 32)
    model.model.layers[0].mlp.up_proj = QuantLinear.from_linear(torch.nn.Linear(64, 128), 8, rtn.PER_CHANNEL)
    with pytest.raises(ValueError, match="same way"):
        save_quantized(model, tmp_path / "c", "x", None, "rtn")
