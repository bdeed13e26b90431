"""Model shapes to reason about without downloading anything.

The formulas in `labkit.profile.cost` need only a model's shape (a `LlamaConfig`), never its
weights, so a learner on a laptop can plan the memory of a 70B model. These presets copy the
`config.json` of well-known checkpoints; `tests/profile` checks their parameter counts
against the published sizes and the embedded one against the model that ships with labkit.
"""
from __future__ import annotations

from labkit.models.llama import LlamaConfig


def _cfg(vocab: int, hidden: int, mlp: int, layers: int, heads: int, kv_heads: int, *, head_dim: int | None = None,
         tied: bool = False, bias: bool = False, theta: float = 10000.0, max_pos: int = 4096,
         model_type: str = "llama") -> LlamaConfig:
    return LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=kv_heads,
                       head_dim=head_dim or hidden // heads, rope_theta=theta, max_position_embeddings=max_pos,
                       tie_word_embeddings=tied, attention_bias=bias, model_type=model_type)


#: name -> config. "embedded" is SmolLM2-135M-Instruct, the model `load_model("embedded")` gives.
PRESETS: dict[str, LlamaConfig] = {
    "embedded (SmolLM2-135M)": _cfg(49152, 576, 1536, 30, 9, 3, tied=True, theta=100000.0, max_pos=8192),
    "Llama-2-7B": _cfg(32000, 4096, 11008, 32, 32, 32),
    "Llama-2-13B": _cfg(32000, 5120, 13824, 40, 40, 40),
    "Llama-2-70B": _cfg(32000, 8192, 28672, 80, 64, 8),
    "Llama-3-8B": _cfg(128256, 4096, 14336, 32, 32, 8, theta=500000.0, max_pos=8192),
    "Qwen2-7B": _cfg(152064, 3584, 18944, 28, 28, 4, bias=True, theta=1000000.0, max_pos=32768,
                     model_type="qwen2"),
    "Mistral-7B": _cfg(32000, 4096, 14336, 32, 32, 8, max_pos=32768, model_type="mistral"),
}

EMBEDDED = "embedded (SmolLM2-135M)"


def preset(name: str) -> LlamaConfig:
    """A preset by name; 'embedded' is accepted as a short name for the embedded model."""
    if name == "embedded":
        name = EMBEDDED
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None
