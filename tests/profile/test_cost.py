"""The cost formulas against hand-computed values and against the model code itself."""
import math

import pytest
import torch

from labkit.models.llama import Llama, parameter_count
from labkit.profile import cost
from labkit.profile.configs import EMBEDDED, PRESETS, preset

LLAMA2_7B = PRESETS["Llama-2-7B"]

# published parameter counts (safetensors totals)
PUBLISHED = {
    "Llama-2-7B": 6_738_415_616, "Llama-2-13B": 13_015_864_320, "Llama-2-70B": 68_976_648_192,
    "Llama-3-8B": 8_030_261_248, "Qwen2-7B": 7_615_616_512, "Mistral-7B": 7_241_732_096,
    EMBEDDED: 134_515_008,
}


@pytest.mark.parametrize("name", list(PRESETS))
def test_param_count_matches_published_and_model_code(name):
    config = PRESETS[name]
    assert cost.param_count(config) == PUBLISHED[name]
    with torch.device("meta"):
        model = Llama(config)
    assert cost.param_count(config) == parameter_count(model)


def test_embedded_preset_matches_the_shipped_model():
    from labkit.models import load

    from labkit.models.loader import read_config, resolve
    from labkit.models.llama import LlamaConfig

    real = LlamaConfig.from_hf(read_config(resolve("embedded")))
    mine = preset("embedded")
    for field in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "head_dim", "tie_word_embeddings", "rope_theta"):
        assert getattr(real, field) == getattr(mine, field), field
    assert load  # imported: the loader is the source of truth


def test_llama2_7b_by_hand():
    # weights: 6.74 B params x 2 bytes = 13.5 GB in fp16
    assert cost.param_bytes(LLAMA2_7B, 16) / 1e9 == pytest.approx(13.48, abs=0.01)
    assert cost.param_bytes(LLAMA2_7B, 4) / 1e9 == pytest.approx(3.37, abs=0.01)
    # KV: 2 (K, V) x 32 layers x 32 heads x 128 dims x 2 bytes = 524288 B = 0.5 MiB per token
    assert cost.kv_bytes_per_token(LLAMA2_7B, 16) == 2 * 32 * 32 * 128 * 2 == 0.5 * 2**20
    # a 4096-token sequence: 2 GiB; batch 8: 16 GiB
    assert cost.kv_cache_bytes(LLAMA2_7B, 8, 4096) == 16 * 2**30
    # matmul weights: 32 x (4 x 4096^2 + 3 x 4096 x 11008) + 32000 x 4096
    assert cost.matmul_params(LLAMA2_7B) == 32 * (4 * 4096**2 + 3 * 4096 * 11008) + 32000 * 4096
    # ~2 FLOPs per matmul weight per token: 2 x (6.74 B - 0.13 B of embedding) = 13.2 GFLOP
    assert cost.flops_per_token(LLAMA2_7B, 0) / 1e9 == pytest.approx(13.21, abs=0.01)
    # attention at context 4096 adds 4 x 32 x 32 x 128 x 4096 = 2.1 GFLOP
    assert cost.flops_per_token(LLAMA2_7B, 4096) - cost.flops_per_token(LLAMA2_7B, 0) == 4 * 32 * 4096 * 4096


def test_gqa_shrinks_the_kv_cache():
    # Llama-2-70B: 80 layers, 8 KV heads of 128: 2 x 80 x 8 x 128 x 2 B = 320 KiB per token
    assert cost.kv_bytes_per_token(PRESETS["Llama-2-70B"]) == 327_680
    # Llama-3-8B vs Llama-2-7B: same layers and head size, 8 vs 32 KV heads
    assert cost.kv_bytes_per_token(PRESETS["Llama-3-8B"]) * 4 == cost.kv_bytes_per_token(LLAMA2_7B)


def test_decode_intensity_is_about_the_batch_size():
    # fp16, context 1 (no KV traffic to speak of): 2 FLOPs per 2-byte weight per sequence
    for batch in (1, 8, 64):
        assert cost.arithmetic_intensity(LLAMA2_7B, batch, 1) == pytest.approx(batch, rel=0.01)
    # int4 weights read 4x fewer bytes: intensity 4x higher at batch 1
    assert cost.arithmetic_intensity(LLAMA2_7B, 1, 1, 4, 16) == pytest.approx(4, rel=0.01)
    # with a long context the KV cache dominates, and batching stops helping
    long = [cost.arithmetic_intensity(LLAMA2_7B, b, 32768) for b in (64, 256)]
    assert long[1] < 1.2 * long[0] and long[1] < 2


def test_prefill_flops_is_the_sum_of_per_token_costs():
    c = PRESETS["Mistral-7B"]
    T = 37
    total = sum(cost.flops_per_token(c, i + 1) for i in range(T))
    assert cost.prefill_flops(c, T, all_logits=True) == total
    head = c.vocab_size * c.hidden_size
    assert cost.prefill_flops(c, T) == total - 2 * head * (T - 1)


def test_decode_flops_and_bytes_definitions():
    c = PRESETS["Llama-3-8B"]
    assert cost.decode_flops(c, 4, 100) == 4 * cost.flops_per_token(c, 100)
    assert cost.decode_bytes(c, 4, 100, 4.25, 8) == cost.matmul_params(c) * 4.25 / 8 + 4 * 100 * cost.kv_bytes_per_token(c, 8)


def test_group_bits():
    assert cost.group_bits(4, 128) == 4.25
    assert cost.group_bits(4, 32) == 5.0
    assert cost.group_bits(8, 64, zero_point=False) == 8.25
    assert cost.WEIGHT_FORMATS["int4 g128"] == cost.group_bits(4, 128)


def test_memory_plan_and_fit():
    plan = cost.memory_plan(LLAMA2_7B, 1, 4096, memory_gb=24)
    assert plan.weights == cost.param_bytes(LLAMA2_7B)
    assert plan.kv_cache == 2 * 2**30
    assert 0 < plan.activations < 0.5e9
    assert plan.total == plan.weights + plan.kv_cache + plan.activations
    assert plan.fits  # 13.5 + 2.1 + small < 21.6 usable
    assert not cost.memory_plan(PRESETS["Llama-2-70B"], 1, 4096, memory_gb=80).fits   # 138 GB of fp16 weights
    assert cost.memory_plan(PRESETS["Llama-2-70B"], 1, 4096, weight_bits=4.25, memory_gb=80).fits
    assert cost.memory_plan(LLAMA2_7B, 1, 1).fits is None  # no device given


def test_max_batch_is_the_largest_that_fits():
    for name, ctx, mem in (("Llama-2-7B", 4096, 80), ("Llama-3-8B", 8192, 24), ("Llama-2-70B", 4096, 80)):
        c = PRESETS[name]
        b = cost.max_batch(c, ctx, mem)
        if b:
            assert cost.memory_plan(c, b, ctx, memory_gb=mem).fits
        assert not cost.memory_plan(c, b + 1, ctx, memory_gb=mem).fits
    # Llama-2-7B on an 80 GB card at 4096 tokens: (72 - 13.5) GB / 2.15 GB per sequence ~ 27
    assert cost.max_batch(LLAMA2_7B, 4096, 80) == 27
    assert cost.max_batch(PRESETS["Llama-2-70B"], 4096, 80) == 0


def test_activation_estimate_scales_with_tokens():
    c = PRESETS[EMBEDDED]
    a1, a2 = cost.activation_bytes(c, 100), cost.activation_bytes(c, 200)
    logits = c.vocab_size * 4
    assert math.isclose(a2 - logits, 2 * (a1 - logits))
