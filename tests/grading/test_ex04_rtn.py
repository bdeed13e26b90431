"""Exercise 04a (group-wise RTN): solutions score full marks, stubs zero, typical mistakes lose points.

Kinds of mistake covered: numerics (all-positive and all-negative groups at the edges of the
grid, a constant group), every parameter (bits 2, 3, 4, 8; group sizes 8 to K), contracts
(ValueError for a group size that does not divide K; float32 output; inputs unmodified),
boundaries (one group per row, an all-zero group); fixed seeds throughout."""
import pytest

EXERCISE = "ex04_rtn"


def test_solution_full_marks_and_stub_zero(g):
    g.assert_full_and_zero(EXERCISE)


@pytest.mark.parametrize("old, new, check, hint", [
    # groups taken across the wrong axis: [N, g, K // g] interleaves channels of different groups
    ("groups = w.float().reshape(n, k // group_size, group_size)        # [N, groups, g]\n"
     "    lo, hi = groups.amin(dim=-1), groups.amax(dim=-1)",
     "groups = w.float().reshape(n, group_size, k // group_size)\n"
     "    lo, hi = groups.amin(dim=1), groups.amax(dim=1)\n"
     "    groups = groups.transpose(1, 2)",
     "groups_are_consecutive_input_channels", "[N, K // g, g]"),
    # scales returned transposed ([K // g, N], the checkpoint's orientation, not this exercise's)
    ("return q.reshape(n, k), scale, zero", "return q.reshape(n, k), scale.t(), zero.t()",
     "shapes_and_code_range", "transposed"),
    # off by one: 2**bits levels instead of 2**bits - 1 steps
    ("qmax = 2**bits - 1\n    groups", "qmax = 2**bits\n    groups", "shapes_and_code_range", "[0, 15]"),
    # the bit width ignored
    ("qmax = 2**bits - 1\n    groups", "qmax = 15\n    groups", "shapes_and_code_range", None),
    # no clamp: zero points and codes spill out of range
    ("zero = torch.round(-lo / scale).clamp(0, qmax)", "zero = torch.round(-lo / scale)",
     "codes_match_the_reference", None),
    # only the lower clamp: an all-negative group needs a zero point above qmax
    ("zero = torch.round(-lo / scale).clamp(0, qmax)", "zero = torch.round(-lo / scale).clamp(min=0)",
     "codes_match_the_reference", "all negative"),
    # dequantize forgets the zero point
    ("return ((groups - zero[..., None]) * scale[..., None]).reshape(n, k)",
     "return (groups * scale[..., None]).reshape(n, k)", "dequantize_inverts", "(q - zero) * scale"),
    # dequantize keeps q's dtype / the scale's dtype instead of float32
    ("groups = q.float().reshape(n, k // group_size, group_size)\n    return ((groups",
     "groups = q.double().reshape(n, k // group_size, group_size)\n    return ((groups",
     "dequantize_inverts", "float32"),
    # a constant group divides by zero
    ("scale = ((hi - lo) / qmax).clamp(min=1e-8)", "scale = (hi - lo) / qmax",
     "constant_group_and_bad_group_size", "clamp the scale"),
    # a floor on the scale far above 1e-8: groups of tiny weights lose their resolution
    ("scale = ((hi - lo) / qmax).clamp(min=1e-8)", "scale = ((hi - lo) / qmax).clamp(min=1e-3)",
     "codes_match_the_reference", None),
    # no check that the group size divides K
    ('    if k % group_size:\n        raise ValueError(f"group size {group_size} does not divide K = {k}")\n', "",
     "constant_group_and_bad_group_size", None),
    # w.float() of a float32 tensor is w itself: shifting it in place writes into the caller's weight
    ("    q = torch.clamp(torch.round(groups / scale[..., None]) + zero[..., None], 0, qmax)",
     "    groups /= scale[..., None]\n    q = torch.clamp(torch.round(groups) + zero[..., None], 0, qmax)",
     "inputs_are_not_modified", "same tensor"),
])
def test_typical_mistakes_lose_points(tmp_path, old, new, check, hint, g):
    g.assert_loses(g.variant(EXERCISE, tmp_path, old, new), check, hint)
