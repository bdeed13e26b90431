"""Exercise 00 (decode cost): solutions score full marks, stubs zero, typical mistakes lose points.

Kinds of mistake covered: numerics (fractional and sub-byte bit widths), every parameter
(bits, batch, context, weight_bits, kv_bits), boundaries (context 0, batch 1), and fixed
configs (a head_dim that is not hidden // heads is always among them)."""
import pytest


EXERCISE = "ex00_decode_cost"


def test_solution_full_marks_and_stub_zero(g):
    g.assert_full_and_zero(EXERCISE)


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
     "arithmetic_intensity", "bytes per FLOP"),
    # integer division: 4-bit (or 4.5-bit) entries become 0 bytes
    ("config.head_dim * bits / 8", "config.head_dim * (bits // 8)", "kv_bytes_per_token", "not //"),
    # the bit width ignored
    ("config.head_dim * bits / 8", "config.head_dim * 16 / 8", "kv_bytes_per_token", "`bits` argument"),
    # head_dim taken as hidden // heads (true of Llama-2, not of every model)
    ("config.num_key_value_heads * config.head_dim * bits", "config.num_key_value_heads * "
     "(config.hidden_size // config.num_attention_heads) * bits", "kv_bytes_per_token", "config.head_dim"),
    ("q = config.num_attention_heads * config.head_dim", "q = config.hidden_size", "matmul_params", None),
    # attention over the KV heads only (GQA shares K and V, not the scores)
    ("attention = 4 * config.num_hidden_layers * config.num_attention_heads",
     "attention = 4 * config.num_hidden_layers * config.num_key_value_heads", "decode_flops", "every query head"),
    # weight_bits or kv_bits ignored
    ("return matmul_params(config) * weight_bits / 8 +", "return matmul_params(config) * 16 / 8 +",
     "decode_bytes", "`weight_bits`"),
    ("kv_bytes_per_token(config, kv_bits)", "kv_bytes_per_token(config)", "decode_bytes", "`kv_bits`"),
    # the intensity at the default bit widths
    ("/ decode_bytes(config, batch, context, weight_bits, kv_bits)", "/ decode_bytes(config, batch, context)",
     "arithmetic_intensity", "Pass weight_bits and kv_bits"),
])
def test_typical_mistakes_lose_points(tmp_path, old, new, check, hint, g):
    g.assert_loses(g.variant(EXERCISE, tmp_path, old, new), check, hint)
