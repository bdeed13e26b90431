"""Back-of-the-envelope costs of running a Llama-family model: FLOPs, bytes, memory.

Everything here is arithmetic on a `LlamaConfig`, so it works for any model size without
weights. The definitions are deliberately simple and stated once, because the exercises
(`exercises/ex00_decode_cost.py`) are graded against them:

- A matrix multiply of a [tokens, n] input by an [n, m] weight costs `2 * tokens * n * m`
  FLOPs (one multiply and one add per weight per token).
- "Matmul weights" are the seven projections of every layer plus the output head. The head
  counts even when it is tied to the embedding: tying saves memory, not work, and the head
  still reads the whole [vocab, hidden] table at every step. The embedding lookup, the
  norms and the biases are ignored for FLOPs and traffic (they are tiny).
- Attention over `context` cached tokens costs `4 * layers * heads * head_dim * context`
  FLOPs per new token: `q @ k^T` and `probs @ v`, each a multiply-add per element.
- A decode step of `batch` sequences reads every matmul weight once (shared by the batch)
  and the K and V cache of every sequence. This is why decoding is memory-bound: the
  FLOPs grow with the batch, the weight traffic does not.

Sizes are in bytes; `bits` may be fractional (a 4-bit format with one fp16 scale and one
fp16 zero per 128 weights costs `4 + 32/128 = 4.25` bits per weight, see `group_bits`).
"""
from __future__ import annotations

from dataclasses import dataclass

from labkit.models.llama import LlamaConfig, kv_bytes_per_token

#: Weight formats offered by the planners: name -> bits per weight (scales included).
WEIGHT_FORMATS: dict[str, float] = {
    "fp32": 32.0,
    "fp16 / bf16": 16.0,
    "int8 (per channel)": 8.0,
    "int4 g128": 4.25,
    "int4 g32": 5.0,
}

#: KV-cache formats: name -> bits per cached element.
KV_FORMATS: dict[str, float] = {"fp32": 32.0, "fp16 / bf16": 16.0, "int8 / fp8": 8.0, "int4": 4.0}

GB = 1e9  # sizes are reported in decimal gigabytes, as GPU data sheets do


def group_bits(bits: int, group_size: int, scale_bits: int = 16, zero_point: bool = True) -> float:
    """Bits per weight of a group-quantized format, counting each group's scale (and zero)."""
    return bits + (scale_bits * (2 if zero_point else 1)) / group_size


# ----------------------------------------------------------------------------- parameters


def layer_matmul_params(config: LlamaConfig) -> int:
    """Weights of the seven projections of one decoder layer (q, k, v, o, gate, up, down)."""
    d, f = config.hidden_size, config.intermediate_size
    q = config.num_attention_heads * config.head_dim
    kv = config.num_key_value_heads * config.head_dim
    return d * q + 2 * d * kv + q * d + 3 * d * f


def matmul_params(config: LlamaConfig) -> int:
    """Weights that take part in a matmul for every token: all layers plus the output head."""
    return config.num_hidden_layers * layer_matmul_params(config) + config.vocab_size * config.hidden_size


def param_count(config: LlamaConfig) -> int:
    """All parameters, as `labkit.models.llama.parameter_count` counts them (tied head once)."""
    d, L = config.hidden_size, config.num_hidden_layers
    embed = config.vocab_size * d
    head = 0 if config.tie_word_embeddings else config.vocab_size * d
    bias = (config.num_attention_heads + 2 * config.num_key_value_heads) * config.head_dim if config.attention_bias else 0
    per_layer = layer_matmul_params(config) + bias + 2 * d  # two RMSNorm weights
    return embed + head + L * per_layer + d  # + the final norm


def param_bytes(config: LlamaConfig, bits: float = 16) -> float:
    """Memory of all the parameters (`param_count`) at `bits` per parameter."""
    return param_count(config) * bits / 8


# ----------------------------------------------------------------------------- KV cache


def kv_cache_bytes(config: LlamaConfig, batch: int, context: int, bits: float = 16) -> float:
    """The KV cache of `batch` sequences of `context` tokens each."""
    return batch * context * kv_bytes_per_token(config, bits)


# ----------------------------------------------------------------------------- FLOPs


def attention_flops_per_token(config: LlamaConfig, context: int) -> int:
    """FLOPs of q k^T and probs v for one new token attending to `context` tokens."""
    return 4 * config.num_hidden_layers * config.num_attention_heads * config.head_dim * context


def flops_per_token(config: LlamaConfig, context: int = 0) -> int:
    """Forward FLOPs of one token that attends to `context` tokens: ~2 x parameters, plus attention."""
    return 2 * matmul_params(config) + attention_flops_per_token(config, context)


def prefill_flops(config: LlamaConfig, tokens: int, all_logits: bool = False) -> int:
    """FLOPs to process a prompt of `tokens` tokens in one forward pass.

    Token i attends to i + 1 tokens (causal), so attention grows with tokens^2 while the
    matmuls grow with tokens. Generation needs only the last position's logits
    (`Llama.forward(last_only=True)`), so by default the head runs once, not per token.
    """
    head = config.vocab_size * config.hidden_size
    body = config.num_hidden_layers * layer_matmul_params(config)
    heads = tokens if all_logits else 1
    attn = 4 * config.num_hidden_layers * config.num_attention_heads * config.head_dim * tokens * (tokens + 1) // 2
    return 2 * body * tokens + 2 * head * heads + attn


def prefill_bytes(config: LlamaConfig, tokens: int, weight_bits: float = 16, kv_bits: float = 16) -> float:
    """Bytes a prefill must move at least: every matmul weight once, and the KV cache it writes."""
    return matmul_params(config) * weight_bits / 8 + kv_cache_bytes(config, 1, tokens, kv_bits)


def decode_flops(config: LlamaConfig, batch: int, context: int) -> int:
    """FLOPs of one decode step: `batch` sequences each add one token attending to `context` tokens."""
    return batch * flops_per_token(config, context)


def decode_bytes(config: LlamaConfig, batch: int, context: int, weight_bits: float = 16, kv_bits: float = 16) -> float:
    """Bytes one decode step must read: every matmul weight once, plus each sequence's KV cache."""
    return matmul_params(config) * weight_bits / 8 + kv_cache_bytes(config, batch, context, kv_bits)


def arithmetic_intensity(config: LlamaConfig, batch: int, context: int, weight_bits: float = 16,
                         kv_bits: float = 16) -> float:
    """FLOPs per byte of a decode step. About `batch` at fp16 and short context (2 FLOPs per
    2-byte weight per sequence): far below any GPU's ridge point unless the batch is large."""
    return decode_flops(config, batch, context) / decode_bytes(config, batch, context, weight_bits, kv_bits)


# ----------------------------------------------------------------------------- memory plan


def activation_bytes(config: LlamaConfig, tokens: int, batch: int = 1, bits: float = 16) -> float:
    """A rough peak of the temporary tensors while `tokens` tokens pass through one layer.

    Inference frees each layer's activations before the next, so the peak is one layer's
    working set: the residual stream and normed input (2 d), q/k/v (H + 2 H_kv) D, the MLP's
    gate and up (2 f), plus fp32 logits of the last position of every sequence. Attention is
    assumed to be fused (no [T, T] score matrix in memory), as SDPA and FlashAttention do.
    """
    per_token = 2 * config.hidden_size + (config.num_attention_heads + 2 * config.num_key_value_heads) * config.head_dim \
        + 2 * config.intermediate_size
    return tokens * per_token * bits / 8 + batch * config.vocab_size * 4


@dataclass
class MemoryPlan:
    """Where the memory of serving `batch` sequences of `context` tokens goes."""

    weights: float
    kv_cache: float
    activations: float
    capacity: float | None = None   # bytes the device offers (after the usable fraction)

    @property
    def total(self) -> float:
        return self.weights + self.kv_cache + self.activations

    @property
    def fits(self) -> bool | None:
        return None if self.capacity is None else self.total <= self.capacity

    def gb(self) -> dict[str, float]:
        return {"weights": self.weights / GB, "kv_cache": self.kv_cache / GB,
                "activations": self.activations / GB, "total": self.total / GB}


def memory_plan(config: LlamaConfig, batch: int, context: int, weight_bits: float = 16, kv_bits: float = 16,
                memory_gb: float | None = None, usable: float = 0.9, prefill_chunk: int = 2048) -> MemoryPlan:
    """Weights + KV cache + activations for serving `batch` x `context` tokens.

    `usable` keeps a margin of the device memory for the CUDA context, the allocator's
    fragmentation and library workspaces (vLLM's `gpu_memory_utilization` defaults to 0.9).
    Prompts are assumed to be prefilled in chunks of at most `prefill_chunk` tokens, as
    serving engines do, so activations do not grow with batch x context.
    """
    tokens = min(batch * context, max(prefill_chunk, batch))
    return MemoryPlan(weights=param_bytes(config, weight_bits),
                      kv_cache=kv_cache_bytes(config, batch, context, kv_bits),
                      activations=activation_bytes(config, tokens, batch),
                      capacity=None if memory_gb is None else memory_gb * GB * usable)


def max_batch(config: LlamaConfig, context: int, memory_gb: float, weight_bits: float = 16, kv_bits: float = 16,
              usable: float = 0.9) -> int:
    """The largest batch of `context`-token sequences that fits (0 if not even the weights fit)."""
    lo, hi = 0, 1
    while memory_plan(config, hi, context, weight_bits, kv_bits, memory_gb, usable).fits:
        lo, hi = hi, hi * 2
        if hi > 1 << 24:
            return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if memory_plan(config, mid, context, weight_bits, kv_bits, memory_gb, usable).fits else (lo, mid)
    return lo
