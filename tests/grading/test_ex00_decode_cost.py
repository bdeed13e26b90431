"""Exercise 00 (decode cost): solutions score full marks, stubs zero, typical mistakes lose points."""
import pytest


EXERCISE = "ex00_decode_cost"


def test_solution_full_marks(g):
    report = g.solution(EXERCISE)
    assert report.score == report.max > 0, g.failed(report)


def test_stub_scores_zero(g):
    report = g.stub(EXERCISE)
    assert report.score == 0
    assert all(r.message == "not implemented yet" for r in report.results)


@pytest.mark.parametrize("old, new, check, hint", [
    # KV cache of all query heads instead of the KV heads
    ("2 * config.num_hidden_layers * config.num_key_value_heads", "2 * config.num_hidden_layers * config.num_attention_heads",
     "kv_bytes_per_token", "only the num_key_value_heads"),
    # only K (or only V)
    ("return 2 * config.num_hidden_layers", "return 1 * config.num_hidden_layers", "kv_bytes_per_token", "both K and V"),
    # bits, not bytes
    ("config.head_dim * bits / 8", "config.head_dim * bits", "kv_bytes_per_token", "divide by 8"),
    # forgot the output head
    ("return config.num_hidden_layers * per_layer + config.vocab_size * d", "return config.num_hidden_layers * per_layer",
     "matmul_params", "output head"),
    # k/v projections with all heads
    ("kv = config.num_key_value_heads * config.head_dim", "kv = config.num_attention_heads * config.head_dim",
     "matmul_params", "num_key_value_heads heads"),
    # two-matrix MLP
    ("3 * d * f", "2 * d * f", "matmul_params", "three matrices"),
    # one FLOP per multiply-add
    ("matmuls = 2 * matmul_params(config)", "matmuls = matmul_params(config)", "decode_flops", None),
    # no attention FLOPs
    ("return batch * (matmuls + attention)", "return batch * matmuls", "decode_flops", "attention"),
    # batch ignored
    ("return batch * (matmuls + attention)", "return matmuls + attention", "decode_flops", "each sequence"),
    # weights read once per sequence
    ("return matmul_params(config) * weight_bits / 8 +", "return batch * matmul_params(config) * weight_bits / 8 +",
     "decode_bytes", "shared by the whole batch"),
    # KV of one sequence only
    ("+ batch * context * kv_bytes_per_token(config, kv_bits)", "+ context * kv_bytes_per_token(config, kv_bits)",
     "decode_bytes", "its own KV cache"),
    # bytes per FLOP
    ("return decode_flops(config, batch, context) / decode_bytes(config, batch, context, weight_bits, kv_bits)",
     "return decode_bytes(config, batch, context, weight_bits, kv_bits) / decode_flops(config, batch, context)",
     "arithmetic_intensity", None),
])
def test_typical_mistakes_lose_points(tmp_path, old, new, check, hint, g):
    report = g.variant(EXERCISE, tmp_path, old, new)
    failed = g.failed(report)
    assert report.score < report.max
    assert check in failed, f"{check} should fail; failures: {failed}"
    if hint:
        assert hint in failed[check], failed[check]


def test_hard_coded_head_dim_loses_points(tmp_path, g):
    """head_dim = hidden // heads is true of Llama-2 but not of every model."""
    report = g.variant(EXERCISE, tmp_path, "q = config.num_attention_heads * config.head_dim",
                            "q = config.hidden_size")
    assert "matmul_params" in g.failed(report)
