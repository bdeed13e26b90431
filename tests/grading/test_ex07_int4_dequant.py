"""Exercise 07a (one packed int4 word): solutions score full marks, stubs zero, typical mistakes lose points.

Kinds of mistake covered: numerics (words with bit 31 set, negative in Python; codes up to
2**23 - 1 through the float trick), every parameter (word, zero word, scales), contracts
(the scales list unmodified), boundaries (the words -1 and -2**31, codes 0 and 15)."""
import pytest

EXERCISE = "ex07_int4_dequant"


def test_solution_full_marks_and_stub_zero(g):
    g.assert_full_and_zero(EXERCISE)


@pytest.mark.parametrize("old, new, check, hint", [
    # column c in nibble c
    ("return AWQ_ORDER.index(c)", "return c", "nibble_of_each_column", "AWQ keeps even columns"),
    ("shift = 4 * column_nibble(c)", "shift = 4 * c", "word_matches_the_packed_layout", "nibble c"),
    # AWQ_ORDER[c] instead of its inverse (right for 0 and 7 only)
    ("return AWQ_ORDER.index(c)", "return AWQ_ORDER[c]", "nibble_of_each_column", None),
    # the float trick without subtracting 2**23
    ("return float(bits.view(np.float32) - np.float32(2**23))", "return float(bits.view(np.float32))",
     "float_trick_gives_the_code", "subtracting 2**23"),
    # no mask: the higher nibbles (and the sign) stay in
    ("q = (word >> shift) & 0xF", "q = word >> shift", "word_matches_the_packed_layout", "bit 31"),
    # the zero point ignored
    ("out.append((code_to_float(q) - code_to_float(z)) * scales[c])", "out.append(code_to_float(q) * scales[c])",
     "word_matches_the_packed_layout", None),
    # the scale forgotten
    ("out.append((code_to_float(q) - code_to_float(z)) * scales[c])",
     "out.append(code_to_float(q) - code_to_float(z))", "word_matches_the_packed_layout", None),
    # the float trick applied to the whole (negative) word: numpy refuses it as uint32
    ("q = (word >> shift) & 0xF", "q = (int(np.array(word, dtype=np.uint32)) >> shift) & 0xF",
     "word_matches_the_packed_layout", "negative Python int"),
    # scales scaled in place
    ("        out.append((code_to_float(q) - code_to_float(z)) * scales[c])",
     "        scales[c] *= code_to_float(q) - code_to_float(z)\n        out.append(scales[c])",
     "word_matches_the_packed_layout", "list of scales"),
])
def test_typical_mistakes_lose_points(tmp_path, old, new, check, hint, g):
    g.assert_loses(g.variant(EXERCISE, tmp_path, old, new), check, hint)
