"""Checks for exercise 00: the cost of a decode step, against `labkit.profile.cost`."""
from __future__ import annotations

import math
import random

from labkit.grading import check
from labkit.models.llama import LlamaConfig
from labkit.profile import cost
from labkit.profile.configs import PRESETS


def _configs(n: int = 6) -> list[LlamaConfig]:
    """Known models, one whose head_dim is not hidden // heads with a single KV head (as Gemma-2B
    has), plus seeded random shapes where every field differs (GQA, odd head_dim, tied or not)."""
    rng = random.Random(0)
    out = [PRESETS["Llama-2-7B"], PRESETS["Llama-2-70B"], PRESETS["embedded (SmolLM2-135M)"],
           LlamaConfig(vocab_size=256000, hidden_size=2048, intermediate_size=16384, num_hidden_layers=18,
                       num_attention_heads=8, num_key_value_heads=1, head_dim=256, tie_word_embeddings=True)]
    for _ in range(n):
        kv = rng.choice([1, 2, 4])
        heads = kv * rng.choice([2, 3, 4])
        head_dim = rng.choice([32, 48, 80, 96])
        hidden = heads * head_dim + rng.choice([64, -32, 128])  # head_dim is not hidden // heads
        out.append(LlamaConfig(vocab_size=rng.randrange(1000, 60000), hidden_size=hidden,
                               intermediate_size=rng.randrange(hidden, 4 * hidden), num_hidden_layers=rng.randrange(2, 40),
                               num_attention_heads=heads, num_key_value_heads=kv, head_dim=head_dim,
                               tie_word_embeddings=rng.random() < 0.5))
    return out


def _close(a, b) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    except (TypeError, ValueError):
        return False


def _name(c: LlamaConfig) -> str:
    return (f"L={c.num_hidden_layers}, d={c.hidden_size}, f={c.intermediate_size}, H={c.num_attention_heads}, "
            f"H_kv={c.num_key_value_heads}, D={c.head_dim}, vocab={c.vocab_size}")


@check(points=2)
def kv_bytes_per_token(impl):
    for c in _configs():
        for bits in (16, 8, 4, 4.5):   # 4.5: int4 codes plus a scale and zero point per group
            want, got = cost.kv_bytes_per_token(c, bits), impl.kv_bytes_per_token(c, bits)
            if _close(got, want):
                continue
            hint = ""
            if _close(got, cost.kv_bytes_per_token(c, bits // 8 * 8)):
                hint = "bits may be fractional or below 8: divide with /, not // (4 bits is half a byte)"
            elif _close(got, cost.kv_bytes_per_token(c)):
                hint = "the `bits` argument was ignored"
            elif _close(got, want * c.num_attention_heads / c.num_key_value_heads):
                hint = "you counted all query heads; only the num_key_value_heads KV heads are cached"
            elif _close(got, want / 2):
                hint = "both K and V are cached"
            elif _close(got, want * 8):
                hint = "bits, not bytes: divide by 8"
            elif _close(got, want / c.num_hidden_layers):
                hint = "every layer has its own cache"
            elif _close(got, want * (c.hidden_size // c.num_attention_heads) / c.head_dim):
                hint = "use config.head_dim: it is not always hidden_size // num_attention_heads"
            elif _close(got, want * c.hidden_size / (c.num_key_value_heads * c.head_dim)):
                hint = "a KV head is head_dim wide, and there are num_key_value_heads of them (not hidden_size)"
            raise AssertionError(f"{bits}-bit KV of one token for ({_name(c)}): got {got}, expected {want}. {hint}")


@check(points=3)
def matmul_params(impl):
    for c in _configs():
        want, got = cost.matmul_params(c), impl.matmul_params(c)
        if _close(got, want):
            continue
        head = c.vocab_size * c.hidden_size
        hint = ""
        if _close(got, want - head):
            hint = "the output head [vocab, d] is a matmul too (even when tied to the embedding)"
        elif _close(got, want + head) or _close(got, cost.param_count(c)):
            hint = "the embedding lookup and the norms are not matmuls"
        elif _close(got, want + 2 * c.num_hidden_layers * c.hidden_size * (c.num_attention_heads - c.num_key_value_heads) * c.head_dim):
            hint = "k_proj and v_proj produce num_key_value_heads heads, not num_attention_heads"
        elif _close(got, want - c.num_hidden_layers * c.hidden_size * c.intermediate_size):
            hint = "the SwiGLU MLP has three matrices: gate, up and down"
        raise AssertionError(f"matmul weights of ({_name(c)}): got {got}, expected {want}. {hint}")


@check(points=3)
def decode_flops(impl):
    for c in _configs():
        for batch, context in ((1, 0), (1, 1000), (7, 333)):
            want, got = cost.decode_flops(c, batch, context), impl.decode_flops(c, batch, context)
            if _close(got, want):
                continue
            hint = ""
            if _close(got, want / 2):
                hint = "a multiply-add is 2 FLOPs"
            elif _close(got, 2 * batch * cost.matmul_params(c)):
                hint = "attention over the context costs FLOPs too (q k^T and probs v)"
            elif _close(got, want / batch):
                hint = "each sequence of the batch does its own FLOPs"
            elif _close(got, want - batch * 4 * c.num_hidden_layers * context * c.head_dim
                        * (c.num_attention_heads - c.num_key_value_heads)):
                hint = "every query head computes its own scores and weighted sum (num_attention_heads, not the KV heads)"
            raise AssertionError(f"decode FLOPs at batch {batch}, context {context} for ({_name(c)}): "
                                 f"got {got}, expected {want}. {hint}")


@check(points=2)
def decode_bytes(impl):
    for c in _configs():
        for batch, context, wb, kb in ((1, 512, 16, 16), (8, 2048, 4.25, 8), (32, 100, 8, 16), (4, 1000, 16, 4),
                                       (1, 0, 4, 4)):
            want, got = cost.decode_bytes(c, batch, context, wb, kb), impl.decode_bytes(c, batch, context, wb, kb)
            if _close(got, want):
                continue
            weights = cost.matmul_params(c) * wb / 8
            hint = ""
            if _close(got, cost.decode_bytes(c, batch, context, 16, kb)):
                hint = "the `weight_bits` argument was ignored"
            elif _close(got, cost.decode_bytes(c, batch, context, wb, 16)):
                hint = "the `kv_bits` argument was ignored"
            elif _close(got, batch * weights + cost.kv_cache_bytes(c, batch, context, kb)):
                hint = "the weights are read once per step and shared by the whole batch"
            elif _close(got, weights):
                hint = "the KV cache of every sequence is read too"
            elif _close(got, weights + context * cost.kv_bytes_per_token(c, kb)):
                hint = "each sequence of the batch has its own KV cache"
            raise AssertionError(f"decode bytes at batch {batch}, context {context}, {wb}-bit weights, {kb}-bit KV "
                                 f"for ({_name(c)}): got {got}, expected {want}. {hint}")


@check(points=2)
def arithmetic_intensity(impl):
    c = PRESETS["Llama-2-7B"]
    got = impl.arithmetic_intensity(c, 1, 1, 16, 16)
    assert _close(got, cost.arithmetic_intensity(c, 1, 1, 16, 16)), \
        f"Llama-2-7B, batch 1, context 1, fp16: expected about 1 FLOP per byte, got {got}"
    for c in _configs(3):
        for batch, context, wb, kb in ((1, 128, 16, 16), (64, 1024, 4.25, 8), (16, 512, 8, 4)):
            want = cost.arithmetic_intensity(c, batch, context, wb, kb)
            got = impl.arithmetic_intensity(c, batch, context, wb, kb)
            hint = ""
            if _close(got, cost.arithmetic_intensity(c, batch, context)):
                hint = " Pass weight_bits and kv_bits on to decode_bytes."
            elif _close(got, 1 / want):
                hint = " That is bytes per FLOP: divide the FLOPs by the bytes."
            assert _close(got, want), (f"intensity at batch {batch}, context {context}, {wb}/{kb} bits for "
                                       f"({_name(c)}): got {got}, expected {want} (FLOPs / bytes of one step).{hint}")
