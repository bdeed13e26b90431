"""Tiny random teacher / student pairs for the distillation tests (fast on two cores)."""
import json
import shutil

import pytest
import torch

from labkit.models.llama import Llama, LlamaConfig


def tiny_config(**overrides) -> LlamaConfig:
    base = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True,
                max_position_embeddings=512, eos_token_id=2)
    return LlamaConfig(**{**base, **overrides})


def tiny_model(seed: int = 0, **overrides) -> Llama:
    torch.manual_seed(seed)
    model = Llama(tiny_config(**overrides)).eval()
    with torch.no_grad():   # sharper logits than the default init: distributions with some shape
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(3.0)
    return model


def save_folder(model: Llama, folder) -> str:
    """A Hugging Face folder holding `model` with the embedded model's tokenizer."""
    from safetensors.torch import save_file

    from labkit.models.loader import resolve

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(model.config.to_hf()))
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(resolve("embedded") / name, folder / name)
    return str(folder)


@pytest.fixture(scope="session")
def pair(tmp_path_factory):
    """(teacher folder, student folder): 4 and 2 layers, the embedded model's vocabulary."""
    root = tmp_path_factory.mktemp("distill-pair")
    teacher = save_folder(tiny_model(0, vocab_size=49152, num_hidden_layers=4), root / "teacher")
    student = save_folder(tiny_model(1, vocab_size=49152, num_hidden_layers=2), root / "student")
    return teacher, student
