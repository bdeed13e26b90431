"""Exercise 07b (the naive int4 GEMV kernel, in the CUDA simulator): solutions score full marks,
stubs zero, typical mistakes lose points.

Kinds of mistake covered: every parameter (group sizes 32 and 64, N and K), contracts
(threads past N write nothing; every output written), boundaries (a single group, a partial
block of threads, a one-hot x that isolates one row); fixed seeds."""
import pytest

EXERCISE = "ex07_naive_gemv"


def test_solution_full_marks_and_stub_zero(g):
    g.assert_full_and_zero(EXERCISE)


@pytest.mark.parametrize("old, new, check, hint", [
    # column n in nibble n % 8
    ("shift = 4 * AWQ_REVERSE_ORDER[n % 8]", "shift = 4 * (n % 8)", "matches_the_reference", "AWQ_REVERSE_ORDER"),
    # no bounds check: the idle threads of the last block write past out
    ("    if n < out.shape[0]:\n", "    if True:\n", "every_column_written_once", "wrote past the end"),
    # the notebook's group size hard-coded
    ("g = k // group_size", "g = k // 32", "matches_the_reference", "group_size"),
    # one group for every row
    ("g = k // group_size", "g = 0", "each_row_uses_its_own_group", "group 40 // group_size"),
    # the zero point ignored
    ("acc += float32(x[k]) * float32(q - z) * float32(scales[g, n])",
     "acc += float32(x[k]) * float32(q) * float32(scales[g, n])", "matches_the_reference", None),
])
def test_typical_mistakes_lose_points(tmp_path, old, new, check, hint, g):
    g.assert_loses(g.variant(EXERCISE, tmp_path, old, new), check, hint)
