"""A readable Llama-family forward pass (Llama 2/3, Mistral, Qwen2, SmolLM).

One file, short functions, parameter names that match Hugging Face's `LlamaForCausalLM`, so
a checkpoint's safetensors load as they are. Two things are swappable without a second model
class (docs/internals.md):

- every linear layer is a plain `nn.Linear` that quantizers and backends may replace with any
  module of the same call signature (`linear_layers` finds them); the projections that read
  the same input, q/k/v and gate/up, may each be merged into one layer whose output is
  theirs side by side (`Attention.merge_qkv`, `MLP.merge_gate_up`: one wider matmul instead
  of several, as vLLM's checkpoints store them);
- attention goes through the `cache` argument of `Llama.forward`: `None` is plain causal
  attention, `KVCache` the contiguous cache of simple generation, and the engine passes its
  paged-attention context. Each only needs `attend(layer, q, k, v)`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Iterator, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

SUPPORTED = ("llama", "mistral", "qwen2")


class UnsupportedModel(ValueError):
    """The checkpoint's architecture or options are outside what this forward implements."""


@dataclass
class LlamaConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # Qwen2 has biases on q/k/v
    model_type: str = "llama"
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    extra: dict = field(default_factory=dict)  # keys we carry but do not interpret

    @classmethod
    def from_hf(cls, cfg: dict) -> "LlamaConfig":
        """Build from a Hugging Face `config.json` dict, refusing what we cannot run."""
        model_type = cfg.get("model_type", "llama")
        if model_type not in SUPPORTED:
            raise UnsupportedModel(f"model_type {model_type!r} is not supported (supported: {', '.join(SUPPORTED)})")
        if cfg.get("hidden_act", "silu") != "silu":
            raise UnsupportedModel(f"hidden_act {cfg['hidden_act']!r} is not supported (only silu)")
        heads = cfg["num_attention_heads"]
        # transformers >= 5 writes `rope_parameters` (theta and scaling together); older
        # checkpoints have `rope_theta` and `rope_scaling`. Read both.
        rope = cfg.get("rope_parameters") or {}
        theta = rope.get("rope_theta", cfg.get("rope_theta", 10000.0))
        scaling = cfg.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
        known = {f for f in cls.__dataclass_fields__ if f != "extra"} | {"rope_parameters"}
        return cls(
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_hidden_layers=cfg["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=cfg.get("num_key_value_heads") or heads,
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
            rms_norm_eps=cfg.get("rms_norm_eps", 1e-5),
            rope_theta=theta,
            rope_scaling=scaling,
            max_position_embeddings=cfg.get("max_position_embeddings", 4096),
            tie_word_embeddings=cfg.get("tie_word_embeddings", False),
            attention_bias=cfg.get("attention_bias", model_type == "qwen2"),
            model_type=model_type,
            bos_token_id=cfg.get("bos_token_id"),
            eos_token_id=cfg.get("eos_token_id"),
            extra={k: v for k, v in cfg.items() if k not in known},
        )

    def to_hf(self) -> dict:
        """The `config.json` dict (Hugging Face keys) for this config."""
        d = asdict(self)
        extra = d.pop("extra")
        arch = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}
        return {**extra, "architectures": [arch[self.model_type]], "hidden_act": "silu", **d}

    @property
    def eos_ids(self) -> set[int]:
        eos = self.eos_token_id
        return set() if eos is None else set(eos) if isinstance(eos, list) else {eos}


# ---------------------------------------------------------------------------- building blocks


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in float32 as the reference implementations do."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # h * rsqrt(mean(h^2) + eps) for h = x.float(), as one fused op
        return self.weight * F.rms_norm(x.float(), x.shape[-1:], eps=self.eps).to(x.dtype)


def rope_frequencies(config: LlamaConfig) -> torch.Tensor:
    """Inverse frequencies of the rotary embedding, with linear or llama3 scaling applied."""
    dim = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    scaling = config.rope_scaling or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return inv_freq.float()
    if kind == "linear":
        return (inv_freq / scaling["factor"]).float()
    if kind == "llama3":
        # Llama 3.1: keep high frequencies, divide low ones by `factor`, blend in between.
        factor, lo, hi = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_len = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old_len / lo, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - lo) / (hi - lo)
        blended = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / hi) & (wavelen <= old_len / lo)
        return torch.where(medium, blended, scaled).float()
    raise UnsupportedModel(f"rope scaling {kind!r} is not supported (default, linear, llama3)")


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (i, i + D/2) of x [B, T, H, D] by the angles of each token's position."""
    return x * cos + rotate_half(x) * sin


class Attention(nn.Module):
    """Grouped-query attention: H query heads share H_kv key/value heads."""

    def __init__(self, config: LlamaConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.n_heads, self.n_kv, self.head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
        d, bias = config.hidden_size, config.attention_bias
        self.q_proj = nn.Linear(d, self.n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(d, self.n_kv * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(d, self.n_kv * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, d, bias=False)
        self.qkv_proj: nn.Module | None = None   # optional: q, k and v merged (`merge_qkv`)

    def merge_qkv(self, qkv_proj: nn.Module) -> None:
        """Compute q, k and v with one layer whose output is theirs side by side ([H + 2 H_kv] x D
        features); the separate layers go."""
        self.qkv_proj = qkv_proj
        del self.q_proj, self.k_proj, self.v_proj

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: "AttentionCache | None") -> torch.Tensor:
        if self.qkv_proj is None:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        else:
            q, k, v = self.split_qkv(self.qkv_proj(x))
        return self.o_proj(self.attend(q, k, v, cos, sin, cache))

    def split_qkv(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k and v from the merged projection's output."""
        H, H_kv, D = self.n_heads, self.n_kv, self.head_dim
        return qkv.split([H * D, H_kv * D, H_kv * D], -1)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
               cache: "AttentionCache | None") -> torch.Tensor:
        """Rotary embedding, then attention (over the cache, if any) for projected q, k, v [B, T,
        heads x D]: [B, T, H x D], what o_proj takes."""
        B, T, _ = q.shape
        H, H_kv, D = self.n_heads, self.n_kv, self.head_dim
        q, k, v = q.view(B, T, H, D), k.view(B, T, H_kv, D), v.view(B, T, H_kv, D)
        if getattr(cache, "rotary_inside", False):   # a cache whose attention kernel rotates q and k itself
            return cache.attend_unrotated(self.layer, q, k, v, cos, sin).reshape(B, T, -1)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = causal_attention(q, k, v) if cache is None else cache.attend(self.layer, q, k, v)
        return out.reshape(B, T, -1)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: int = 0) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v over [B, T, H, D] inputs; k/v may be longer than q by `past`
    cached tokens, and query i sees keys 0 .. past + i."""
    T, S = q.shape[1], k.shape[1]
    mask = None
    if T > 1:
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=past)
    return attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask).transpose(1, 2)


SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """`scaled_dot_product_attention` over [B, H, T, D] / [B, H_kv, S, D], never through cuDNN.

    cuDNN's fused attention builds an execution plan for every new sequence length, and a
    server sees a new prompt length at almost every request: each plan stalled a prefill
    step many times over (docs/benchmarks.md, "GPU: Llama-2-7B shapes ... H100"). Flash and
    memory-efficient attention do not. Off CUDA there is no cuDNN to exclude, and entering
    the backend context costs host time on every call (per layer and token on a CPU).
    """
    # decided by a branch, not passed as a value: traced with symbolic sizes the comparison is
    # a SymBool, which SDPA's enable_gqa does not take
    gqa = {"enable_gqa": True} if q.shape[1] != k.shape[1] else {}
    if q.device.type != "cuda":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **gqa)
    with sdpa_kernel(SDPA_BACKENDS):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **gqa)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        d, f = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(d, f, bias=False)
        self.up_proj = nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)
        self.gate_up_proj: nn.Module | None = None   # optional: gate and up merged (`merge_gate_up`)

    def merge_gate_up(self, gate_up_proj: nn.Module) -> None:
        """Compute gate and up with one layer whose output is theirs side by side (2 x
        intermediate_size features); the separate layers go."""
        self.gate_up_proj = gate_up_proj
        del self.gate_proj, self.up_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up_proj is None:
            gate, up = self.gate_proj(x), self.up_proj(x)
        else:
            gate, up = self.gate_up_proj(x).chunk(2, -1)
        return self.down_proj(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then + mlp(norm(x))."""

    def __init__(self, config: LlamaConfig, layer: int):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, layer)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, cache):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class Body(nn.Module):
    """Embedding, the decoder layers and the final norm (Hugging Face's `model.` prefix)."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class Llama(nn.Module):
    """The whole causal language model: token ids in, next-token logits out."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.model = Body(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.register_buffer("inv_freq", rope_frequencies(config), persistent=False)

    def rope(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin of shape [B, T, 1, D] for integer positions [B, T]."""
        angles = positions[..., None].float() * self.inv_freq
        angles = torch.cat((angles, angles), dim=-1)[:, :, None, :]
        return angles.cos().to(dtype), angles.sin().to(dtype)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor | None = None,
                cache: "AttentionCache | None" = None, last_only: bool = False) -> torch.Tensor:
        """Logits [B, T, V] (float32) for token ids [B, T].

        positions default to `cache.length + arange(T)` (0.. without a cache). With
        `last_only`, only the last position goes through `lm_head` (what decoding needs:
        the vocabulary projection is the largest matmul of a small model).
        """
        B, T = input_ids.shape
        if positions is None:
            start = getattr(cache, "length", 0)
            positions = torch.arange(start, start + T, device=input_ids.device).expand(B, T)
        x = self.model.embed_tokens(input_ids)
        cos, sin = self.rope(positions, x.dtype)
        for layer in self.model.layers:
            x = layer(x, cos, sin, cache)
        x = self.model.norm(x[:, -1:] if last_only else x)
        return self.lm_head(x).float()


# ---------------------------------------------------------------------------- caches and hooks


class AttentionCache(Protocol):
    """Where attention's K/V live: `attend` takes q, k, v after the rotary embedding. A cache may
    also say `rotary_inside` (True for the current step) and take them before it, with the cos/sin
    of their positions, in `attend_unrotated(layer, q, k, v, cos, sin)` (the engine's GPU kernels)."""

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor: ...


class KVCache:
    """The simple contiguous cache: per layer, K and V buffers [B, H_kv, max_len, D].

    Every row of the batch advances together; `length` tokens are cached. Writing the last
    layer's new keys advances `length`. Memory is reserved for `max_len` tokens up front,
    which is the waste the engine's paged cache removes.
    """

    def __init__(self, config: LlamaConfig, batch: int, max_len: int, dtype: torch.dtype, device="cpu"):
        shape = (config.num_hidden_layers, batch, config.num_key_value_heads, max_len, config.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.length, self.max_len, self.last_layer = 0, max_len, config.num_hidden_layers - 1

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        start, T = self.length, q.shape[1]
        if start + T > self.max_len:
            raise ValueError(f"KV cache full: {start} + {T} tokens > max_len {self.max_len}")
        self.k[layer, :, :, start:start + T] = k.transpose(1, 2)
        self.v[layer, :, :, start:start + T] = v.transpose(1, 2)
        keys = self.k[layer, :, :, :start + T].transpose(1, 2)
        values = self.v[layer, :, :, :start + T].transpose(1, 2)
        if layer == self.last_layer:
            self.length += T
        return causal_attention(q, keys, values, past=start)

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes


LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "qkv_proj", "o_proj", "gate_proj", "up_proj", "gate_up_proj",
                "down_proj")


def linear_layers(model: Llama, include_head: bool = False) -> Iterator[tuple[str, nn.Module, str]]:
    """(qualified name, parent module, attribute) for every swappable linear layer."""
    for name, module in model.named_modules():
        for attr in LINEAR_NAMES:
            if isinstance(getattr(module, attr, None), nn.Module):
                yield f"{name}.{attr}", module, attr
    if include_head:
        yield "lm_head", model, "lm_head"


def kv_bytes_per_token(config: LlamaConfig, bits: float = 16, scale_zero_bytes: int = 0) -> float:
    """K and V of one token in every layer: `head_dim` values at `bits` per KV head, plus
    `scale_zero_bytes` per head and token where a quantized cache stores them (`labkit.quant.kv`:
    a float16 scale and zero, 4 bytes). Grouped-query attention stores only the KV heads,
    which is the whole point of GQA: Llama-2-70B keeps 8 KV heads for 64 query heads."""
    return 2 * config.num_hidden_layers * config.num_key_value_heads * (config.head_dim * bits / 8 + scale_zero_bytes)


def parameter_count(model: nn.Module) -> int:
    """Distinct parameters (a tied embedding counts once). A quantized linear layer keeps its
    weights as codes in a `qweight` buffer; it counts as its in x out weights."""
    stored = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    return stored + sum(m.in_features * m.out_features for m in model.modules() if hasattr(m, "qweight"))
