"""Tiny random checkpoints (folders, as a user passes them) that two ranks can split: 4 query
heads, and 2 KV heads (split) or 1 (copied to both ranks)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from labkit.models import Llama, LlamaConfig, resolve
from labkit.models.llama import linear_layers
from labkit.quant.checkpoint import save_quantized, write_folder
from labkit.quant.qlinear import QuantLinear

PROMPTS = ["The history of the printing press begins in 1440,", "Hello", "a b c d e f g h i j k l m n o p q r s t"]
ENGINE = {"num_blocks": 64, "block_size": 16, "max_model_len": 256, "max_batch_size": 8}


def tiny_model(kv_heads: int, tied: bool) -> Llama:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=kv_heads, head_dim=16, max_position_embeddings=1024,
                      tie_word_embeddings=tied, eos_token_id=2)
    model = Llama(cfg).eval()
    with torch.no_grad():   # sharper logits: greedy paths that wander instead of repeating one token
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    return model


@pytest.fixture(scope="session")
def full_dir(tmp_path_factory) -> Path:
    """fp32, 1 KV head (copied to both ranks), an LM head of its own (split by vocabulary)."""
    model = tiny_model(kv_heads=1, tied=False)
    out = tmp_path_factory.mktemp("tp") / "full"
    return write_folder(out, dict(model.state_dict()), model.config.to_hf(), resolve("embedded"))


@pytest.fixture(scope="session")
def int4_dir(tmp_path_factory) -> Path:
    """AWQ-layout int4 in groups of 32, 2 KV heads (one per rank), tied embeddings: each rank's
    o_proj input (2 heads x 16 = 32 rows) and down_proj input (64 rows) are whole groups."""
    model = tiny_model(kv_heads=2, tied=True)
    for _, parent, attr in list(linear_layers(model)):
        setattr(parent, attr, QuantLinear.from_linear(getattr(parent, attr), 4, 32))
    out = tmp_path_factory.mktemp("tp") / "int4"
    return save_quantized(model, out, "tiny", resolve("embedded"), "rtn")


@pytest.fixture(scope="session")
def h():
    """The constants above (tests run with --import-mode=importlib, so they cannot import conftest)."""
    import sys

    return sys.modules[__name__]
