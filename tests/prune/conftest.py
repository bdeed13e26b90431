"""Tiny random Llama models for the pruning tests (fast on two cores)."""
import json
import shutil

import pytest
import torch

from labkit.models.llama import Llama, LlamaConfig


def tiny_model(seed: int = 0, **overrides) -> Llama:
    """A random tiny Llama (6 layers, 4 query heads in 2 KV groups), stored as float32."""
    base = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
                num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True,
                extra={"torch_dtype": "float32"})
    torch.manual_seed(seed)
    model = Llama(LlamaConfig(**{**base, **overrides})).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                norm.weight.uniform_(0.5, 1.5)
    return model


def tiny_ids(n: int = 64, batch: int = 2, vocab: int = 256, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, n), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    """A Hugging Face folder (float32) holding a tiny random model with the embedded model's tokenizer."""
    from safetensors.torch import save_file

    from labkit.models.loader import resolve

    model = tiny_model(vocab_size=49152)
    folder = tmp_path_factory.mktemp("tiny-llama")
    state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(model.config.to_hf()))
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(resolve("embedded") / name, folder / name)
    return folder
