"""Exercise 00 (chapter 00): what one decode step costs.

Fill in the functions below, then run the check in notebook 00, or from a terminal:

    labkit grade ex00_decode_cost --impl exercises/ex00_decode_cost.py

`config` is a `labkit.models.llama.LlamaConfig`. The fields you need:
`vocab_size`, `hidden_size` (d), `intermediate_size` (f), `num_hidden_layers` (L),
`num_attention_heads` (H), `num_key_value_heads` (H_kv) and `head_dim` (D).
Do not assume `head_dim == hidden_size // num_attention_heads`: some models differ.

Conventions (the same as `labkit.profile.cost`):
- a matmul of one token by an [n, m] weight is n * m multiply-adds = 2 * n * m FLOPs;
- the matmul weights are the seven projections of each layer (q, k, v, o, gate, up, down)
  plus the output head [vocab, d]; the head counts even when tied to the embedding;
  ignore embeddings lookups, norms and biases;
- attention of one new token over `context` tokens: q @ k^T and probs @ v in every layer;
- bits may be fractional (4.25 bits per weight for int4 with per-group scales).
"""
from __future__ import annotations


def kv_bytes_per_token(config, bits: float = 16) -> float:
    """Bytes of KV cache one token adds, over all layers, at `bits` per element.

    Hint: what is cached per layer? How many heads does it have?
    """
    raise NotImplementedError(
        "write kv_bytes_per_token (the bytes of K and V one token adds) in exercises/ex00_decode_cost.py; "
        "notebook 00, section 'Exercise 00: the cost of one decode step', explains it")


def matmul_params(config) -> int:
    """Number of weights that take part in a matmul for every token (see the conventions)."""
    raise NotImplementedError(
        "write matmul_params (the number of matmul weights) in exercises/ex00_decode_cost.py; "
        "notebook 00, section 'Exercise 00: the cost of one decode step', explains it")


def decode_flops(config, batch: int, context: int) -> float:
    """FLOPs of one decode step: `batch` sequences each produce one token that attends to
    `context` tokens (matmuls + attention scores + the weighted sum of values)."""
    raise NotImplementedError(
        "write decode_flops (the FLOPs of one decode step) in exercises/ex00_decode_cost.py; "
        "notebook 00, section 'Exercise 00: the cost of one decode step', explains it")


def decode_bytes(config, batch: int, context: int, weight_bits: float = 16, kv_bits: float = 16) -> float:
    """Bytes one decode step reads from memory: every matmul weight once (the whole batch
    shares them) plus the KV cache of `context` tokens for each of the `batch` sequences."""
    raise NotImplementedError(
        "write decode_bytes (the bytes one decode step reads) in exercises/ex00_decode_cost.py; "
        "notebook 00, section 'Exercise 00: the cost of one decode step', explains it")


def arithmetic_intensity(config, batch: int, context: int, weight_bits: float = 16, kv_bits: float = 16) -> float:
    """FLOPs per byte of one decode step."""
    raise NotImplementedError(
        "write arithmetic_intensity (FLOPs per byte) in exercises/ex00_decode_cost.py; "
        "notebook 00, section 'Exercise 00: the cost of one decode step', explains it")
