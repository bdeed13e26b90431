"""Exercise 04b (int4 packing): solutions score full marks, stubs zero, typical mistakes lose points.

Kinds of mistake covered: numerics (the sign bit of int32 words, uint8 inputs shifted past
their width), every parameter (rows, columns, input dtype), contracts (int32 output, inputs
unmodified), boundaries (a single word, the words -1 and -2**31); fixed seeds."""
import pytest

EXERCISE = "ex04_int4_packing"


def test_solution_full_marks_and_stub_zero(g):
    g.assert_full_and_zero(EXERCISE)


@pytest.mark.parametrize("old, new, check, hint", [
    # nibbles in plain sequential order
    ("for i, column in enumerate(AWQ_ORDER):\n        words |=",
     "for i, column in enumerate(range(8)):\n        words |=", "pack_matches_awq_order", "AWQ_ORDER"),
    ("for i, column in enumerate(AWQ_ORDER):\n        out[",
     "for i, column in enumerate(range(8)):\n        out[", "unpack_inverts_the_layout", "AWQ_ORDER"),
    # the sign bit not wrapped: values >= 2**31 do not fit int32
    ("words = torch.where(words >= 2**31, words - 2**32, words)", "words = words.clamp(max=2**31 - 1)",
     "pack_handles_the_sign_bit", "-1"),
    # no mask: a right shift keeps the higher nibbles
    ("out[:, :, column] = (words >> (4 * i)) & 0xF", "out[:, :, column] = words >> (4 * i)",
     "unpack_inverts_the_layout", "& 0xF"),
    # shifts in the input's dtype: a uint8 loses everything shifted past 8 bits
    ("v = values.to(torch.int64).reshape(rows, cols // 8, 8)", "v = values.reshape(rows, cols // 8, 8)",
     "pack_matches_awq_order", "uint8"),
    # unpacked values left as [R, C // 8, 8]
    ("return out.reshape(rows, n_words * 8)", "return out", "unpack_inverts_the_layout", "(5, 64)"),
])
def test_typical_mistakes_lose_points(tmp_path, old, new, check, hint, g):
    g.assert_loses(g.variant(EXERCISE, tmp_path, old, new), check, hint)
