"""Exercises 04a/04b/05 (quantization): solutions score full marks, stubs zero, typical mistakes lose points."""
import pytest


@pytest.mark.parametrize("exercise", ["ex04_rtn", "ex04_int4_packing", "ex05_awq_search"])
def test_solution_full_marks_and_stub_zero(exercise, g):
    report = g.solution(exercise)
    assert report.score == report.max > 0, g.failed(report)
    stub = g.stub(exercise)
    assert stub.score == 0 and all(r.message == "not implemented yet" for r in stub.results)


@pytest.mark.parametrize("exercise, old, new, check, hint", [
    # groups taken across the wrong axis: [N, g, K // g] interleaves channels of different groups
    ("ex04_rtn", "groups = w.float().reshape(n, k // group_size, group_size)        # [N, groups, g]\n"
     "    lo, hi = groups.amin(dim=-1), groups.amax(dim=-1)",
     "groups = w.float().reshape(n, group_size, k // group_size)\n"
     "    lo, hi = groups.amin(dim=1), groups.amax(dim=1)\n"
     "    groups = groups.transpose(1, 2)",
     "groups_are_consecutive_input_channels", "[N, K // g, g]"),
    # scales returned transposed ([K // g, N], the checkpoint's orientation, not this exercise's)
    ("ex04_rtn", "return q.reshape(n, k), scale, zero", "return q.reshape(n, k), scale.t(), zero.t()",
     "shapes_and_code_range", "transposed"),
    # off by one: 2**bits levels instead of 2**bits - 1 steps
    ("ex04_rtn", "qmax = 2**bits - 1\n    groups", "qmax = 2**bits\n    groups", "shapes_and_code_range", "[0, 15]"),
    # no clamp: codes spill out of range
    ("ex04_rtn", "zero = torch.round(-lo / scale).clamp(0, qmax)", "zero = torch.round(-lo / scale)",
     "codes_match_the_reference", None),
    # dequantize forgets the zero point
    ("ex04_rtn", "return ((groups - zero[..., None]) * scale[..., None]).reshape(n, k)",
     "return (groups * scale[..., None]).reshape(n, k)", "dequantize_inverts", "(q - zero) * scale"),
    # a constant group divides by zero
    ("ex04_rtn", "scale = ((hi - lo) / qmax).clamp(min=1e-8)", "scale = (hi - lo) / qmax",
     "constant_group_and_bad_group_size", "clamp the scale"),
    # nibbles in plain sequential order
    ("ex04_int4_packing", "for i, column in enumerate(AWQ_ORDER):\n        words |=",
     "for i, column in enumerate(range(8)):\n        words |=", "pack_matches_awq_order", "AWQ_ORDER"),
    # the sign bit not wrapped: values >= 2**31 do not fit int32
    ("ex04_int4_packing", "words = torch.where(words >= 2**31, words - 2**32, words)", "words = words.clamp(max=2**31 - 1)",
     "pack_handles_the_sign_bit", "-1"),
    ("ex04_int4_packing", "out[:, :, column] = (words >> (4 * i)) & 0xF", "out[:, :, column] = words >> (4 * i)",
     "unpack_inverts_the_layout", "& 0xF"),
    # AWQ: scales not normalized
    ("ex05_awq_search", "return s / torch.sqrt(s.max() * s.min())", "return s",
     "scales_follow_activations_and_are_normalized", "sqrt(max * min)"),
    # AWQ: scales inverted
    ("ex05_awq_search", "s = act_mean.clamp(min=1e-4) ** alpha", "s = act_mean.clamp(min=1e-4) ** -alpha",
     "scales_follow_activations_and_are_normalized", "inverted"),
    # AWQ: the scale is not folded back
    ("ex05_awq_search", "w_q = fake_quantize(w * s, bits, group_size) / s", "w_q = fake_quantize(w * s, bits, group_size)",
     "finds_the_reference_alpha", "divide Q(w * s) by s"),
    # AWQ: max instead of mean activation
    ("ex05_awq_search", "act_mean = x.abs().mean(dim=0)", "act_mean = x.abs().amax(dim=0)",
     "finds_the_reference_alpha", "mean of |x|"),
])
def test_typical_mistakes_lose_points(tmp_path, exercise, old, new, check, hint, g):
    report = g.variant(exercise, tmp_path, old, new)
    failed = g.failed(report)
    assert check in failed, f"{check} should fail; failed: {failed}"
    assert report.score < report.max
    if hint:
        assert hint in failed[check], failed[check]
