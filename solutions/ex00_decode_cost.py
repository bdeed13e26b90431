"""Solution to exercise 00: what one decode step costs."""
from __future__ import annotations


def kv_bytes_per_token(config, bits: float = 16) -> float:
    # K and V, in every layer, for the KV heads only (grouped-query attention shares them).
    return 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * bits / 8


def matmul_params(config) -> int:
    d, f = config.hidden_size, config.intermediate_size
    q = config.num_attention_heads * config.head_dim
    kv = config.num_key_value_heads * config.head_dim
    per_layer = d * q + 2 * d * kv + q * d + 3 * d * f   # q, k, v, o, gate, up, down
    return config.num_hidden_layers * per_layer + config.vocab_size * d


def decode_flops(config, batch: int, context: int) -> float:
    matmuls = 2 * matmul_params(config)
    attention = 4 * config.num_hidden_layers * config.num_attention_heads * config.head_dim * context
    return batch * (matmuls + attention)


def decode_bytes(config, batch: int, context: int, weight_bits: float = 16, kv_bits: float = 16) -> float:
    return matmul_params(config) * weight_bits / 8 + batch * context * kv_bytes_per_token(config, kv_bits)


def arithmetic_intensity(config, batch: int, context: int, weight_bits: float = 16, kv_bits: float = 16) -> float:
    return decode_flops(config, batch, context) / decode_bytes(config, batch, context, weight_bits, kv_bits)
