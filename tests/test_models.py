"""The readable Llama against Hugging Face transformers, and the loaders' error paths."""
import json

import numpy as np
import pytest
import torch

from labkit.errors import UserError
from labkit.models import KVCache, Llama, LlamaConfig, load, resolve
from labkit.models.embedded import unpermute
from labkit.models.llama import linear_layers, parameter_count


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_embedded_logits_match_transformers(embedded):
    transformers = pytest.importorskip("transformers")
    model, tok = embedded
    hf = transformers.LlamaForCausalLM.from_pretrained(resolve("embedded"), dtype=torch.float32).eval()
    ids = torch.tensor([tok.encode("The history of the printing press begins in 1440, when Gutenberg")])
    with torch.no_grad():
        assert rel_err(model(ids), hf(ids).logits) < 1e-4


def test_embedded_config_and_size(embedded):
    model, _ = embedded
    c = model.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads) == (30, 576, 9, 3)
    assert c.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight
    assert 134e6 < parameter_count(model) < 136e6


TINY = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5)

FAMILIES = {
    "llama2": ("LlamaForCausalLM", "LlamaConfig", dict(TINY, tie_word_embeddings=False)),
    "llama3": ("LlamaForCausalLM", "LlamaConfig", dict(TINY, rope_theta=500000.0, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 32})),
    "qwen2": ("Qwen2ForCausalLM", "Qwen2Config", dict(TINY, tie_word_embeddings=True)),
    "mistral": ("MistralForCausalLM", "MistralConfig", dict(TINY, sliding_window=None)),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_tiny_family_matches_transformers(family, tmp_path):
    transformers = pytest.importorskip("transformers")
    model_cls, config_cls, kwargs = FAMILIES[family]
    torch.manual_seed(0)
    hf = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**kwargs)).eval()
    hf.save_pretrained(tmp_path)  # safetensors
    (tmp_path / "tokenizer.json").write_text("{}")  # not needed here
    config = LlamaConfig.from_hf(json.loads((tmp_path / "config.json").read_text()))
    from labkit.models.loader import build, read_tensors

    ours = build(config, read_tensors(tmp_path), torch.float32)
    ids = torch.randint(0, 128, (2, 100))  # past original_max_position_embeddings: llama3 scaling matters
    with torch.no_grad():
        assert rel_err(ours(ids), hf(ids).logits) < 1e-4
    if family == "qwen2":
        assert ours.model.layers[0].self_attn.q_proj.bias is not None


def test_kv_cache_matches_full_forward(embedded):
    model, tok = embedded
    ids = torch.tensor([tok.encode("Tides rise and fall twice a day because the Moon pulls on the oceans")])
    with torch.no_grad():
        full = model(ids)
        cache = KVCache(model.config, 1, ids.shape[1], torch.float32)
        first = model(ids[:, :7], cache=cache)
        rest = [model(ids[:, i:i + 1], cache=cache) for i in range(7, ids.shape[1])]
    stepped = torch.cat([first] + rest, dim=1)
    assert cache.length == ids.shape[1]
    assert rel_err(stepped, full) < 1e-5


def test_kv_cache_refuses_overflow(embedded):
    model, _ = embedded
    cache = KVCache(model.config, 1, 4, torch.float32)
    with pytest.raises(ValueError, match="KV cache full"):
        model(torch.zeros(1, 5, dtype=torch.long), cache=cache)


def test_last_only_equals_last_row(embedded):
    model, tok = embedded
    ids = torch.tensor([tok.encode("Short prompt here")])
    with torch.no_grad():
        assert torch.allclose(model(ids, last_only=True)[:, -1], model(ids)[:, -1], atol=1e-5)


def test_unpermute_inverts_llama_cpp_permutation():
    heads, dim = 3, 8
    w = np.arange(heads * dim * 5, dtype=np.float32).reshape(heads * dim, 5)
    # llama.cpp's convert script: reshape(n_head, 2, dim // n_head // 2, ...).swapaxes(1, 2)
    permuted = w.reshape(heads, 2, dim // 2, 5).swapaxes(1, 2).reshape(w.shape)
    assert np.array_equal(unpermute(permuted, heads), w)


def test_linear_layers_lists_every_projection():
    model = Llama(LlamaConfig.from_hf(dict(TINY, head_dim=16)))
    names = [n for n, _, _ in linear_layers(model)]
    assert len(names) == 2 * 7 and "model.layers.1.mlp.down_proj" in names
    assert [n for n, _, _ in linear_layers(model, include_head=True)][-1] == "lm_head"


def test_unsupported_architecture_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(dict(TINY, model_type="gpt2")))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(UserError, match="model_type 'gpt2' is not supported"):
        load(str(tmp_path))


def test_pickle_only_checkpoint_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(UserError, match="safetensors only"):
        resolve(str(tmp_path))


def test_corrupt_safetensors_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00garbage")
    with pytest.raises(UserError, match="corrupt or truncated"):
        load(str(tmp_path))


def test_missing_folder_and_bad_hub_id(tmp_path):
    with pytest.raises(UserError, match="no such model folder"):
        resolve(str(tmp_path / "nope"))
    with pytest.raises(UserError, match="cannot fetch"):
        resolve("no-such-org/no-such-model-xyz")  # offline in tests: the hub is unreachable


def test_corrupt_gguf_is_a_clear_error(tmp_path):
    from labkit.models.embedded import convert

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(UserError, match="corrupt"):
        convert(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()
