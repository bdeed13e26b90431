"""KV-cache quantization: int8 / int4, per token and head, asymmetric, online.

During decoding the KV cache, not the weights, dominates memory traffic once contexts grow:
every generated token reads every cached key and value. Quantizing them halves (int8) or
quarters (int4) those bytes. No calibration is needed: each token's key (and value) vector
of one head, `D` numbers, gets its own scale and zero point the moment it is written,
which also follows keys' large per-token variation. The layout is docs/internals.md's (the
engine's paged cache and the kernels share it): codes uint8, int4 two per byte with element
`2i` in the low nibble, and a float16 (scale, zero) pair per token and head, `x = (q - zero) * scale`.

`quant_policy` follows LMDeploy's `--quant-policy`: 0 = float, 8 = int8, 4 = int4. The kernels
speak of code widths, `bits` 16 (float16), 8 or 4; `kv_bits` is the one place a policy becomes bits.

- `FakeQuantKV`: an attention `cache` for evaluation. Every token attends to quantized
  keys and values of all tokens, its own included: exactly what decoding one token at a
  time over a quantized cache computes, done in one pass over a window.
- `QuantKVCache`: the contiguous cache of simple generation (like `KVCache`) storing codes.
"""
from __future__ import annotations

import torch

from labkit.models import llama
from labkit.models.llama import LlamaConfig, causal_attention

POLICIES = (0, 4, 8)


def check_policy(policy: int) -> None:
    if policy not in POLICIES:
        raise ValueError(f"quant_policy must be one of {POLICIES} (0 = float, 8 = int8, 4 = int4), got {policy}")


def kv_bits(policy: int) -> int:
    """The kernels' `bits` for a `quant_policy`: 0 (float) -> 16, 8 -> 8, 4 -> 4."""
    check_policy(policy)
    return 16 if policy == 0 else policy


def quantize_kv(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., D] -> (codes uint8 [..., D] (int8) or [..., D // 2] (int4), float16 [..., 2] (scale, zero)).

    The arithmetic is the kernels' (`labkit.kernels.kv_quant`), so evaluation, the engine's
    torch path and the CUDA kernels store identical codes: scale = (max - min) / (2^b - 1)
    and zero = -min / scale, both rounded to float16, then q = round(x / scale + zero).
    """
    from labkit.kernels.kv_quant import quantize_reference

    if bits not in (4, 8):
        raise ValueError(f"KV codes are 8 or 4 bits, not {bits}")
    return quantize_reference(x, bits)


def dequantize_kv(codes: torch.Tensor, params: torch.Tensor, bits: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Inverse of `quantize_kv`: (q - zero) * scale, in `dtype`."""
    from labkit.kernels.kv_quant import dequantize_cache

    return dequantize_cache(codes, params, bits, dtype)


def fake_quantize_kv(x: torch.Tensor, bits: int) -> torch.Tensor:
    """What a token's K or V looks like after a round trip through the quantized cache (bits 16: unchanged)."""
    if bits == 16:
        return x
    return dequantize_kv(*quantize_kv(x, bits), bits, x.dtype)


class FakeQuantKV:
    """The attention `cache` for evaluating a KV policy on whole windows (see module doc)."""

    def __init__(self, policy: int):
        self.policy, self.bits = policy, kv_bits(policy)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return causal_attention(q, fake_quantize_kv(k, self.bits), fake_quantize_kv(v, self.bits))


class QuantKVCache:
    """`KVCache` with int8/int4 storage: per layer, codes [B, H_kv, max_len, D or D/2] and params.

    Reads dequantize the cached prefix (the torch reference of what the paged int8/int4
    attention kernels do without materializing it).
    """

    def __init__(self, config: LlamaConfig, batch: int, max_len: int, policy: int = 8, device="cpu"):
        if kv_bits(policy) == 16:
            raise ValueError("QuantKVCache stores int8 or int4 (policy 8 or 4); use KVCache for float")
        width = config.head_dim if policy == 8 else config.head_dim // 2
        shape = (config.num_hidden_layers, batch, config.num_key_value_heads, max_len)
        self.codes = {kind: torch.zeros(*shape, width, dtype=torch.uint8, device=device) for kind in "kv"}
        self.params = {kind: torch.zeros(*shape, 2, dtype=torch.float16, device=device) for kind in "kv"}
        self.policy, self.bits = policy, kv_bits(policy)
        self.length, self.max_len, self.last_layer = 0, max_len, config.num_hidden_layers - 1

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        start, T = self.length, q.shape[1]
        if start + T > self.max_len:
            raise ValueError(f"KV cache full: {start} + {T} tokens > max_len {self.max_len}")
        cached = {}
        for kind, x in (("k", k), ("v", v)):
            codes, params = quantize_kv(x.transpose(1, 2), self.bits)      # [B, H_kv, T, ...]
            self.codes[kind][layer, :, :, start:start + T] = codes
            self.params[kind][layer, :, :, start:start + T] = params
            cached[kind] = dequantize_kv(self.codes[kind][layer, :, :, :start + T],
                                         self.params[kind][layer, :, :, :start + T], self.bits, q.dtype).transpose(1, 2)
        if layer == self.last_layer:
            self.length += T
        return causal_attention(q, cached["k"], cached["v"], past=start)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in (*self.codes.values(), *self.params.values()))


def kv_bytes_per_token(config: LlamaConfig, policy: int = 0, float_bytes: int = 2) -> int:
    """Cache bytes one token costs over all layers: K and V, each head's D values (float at
    `float_bytes`, or codes) plus, when quantized, a float16 scale and zero per head
    (`labkit.models.llama.kv_bytes_per_token` for this policy's storage)."""
    bits = kv_bits(policy)
    bits, scale_zero_bytes = (8 * float_bytes, 0) if bits == 16 else (bits, 4)
    return int(llama.kv_bytes_per_token(config, bits, scale_zero_bytes))
