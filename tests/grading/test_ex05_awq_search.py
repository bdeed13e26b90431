"""Exercise 05 (AWQ scale search): solutions score full marks, stubs zero, typical mistakes lose points.

Kinds of mistake covered: numerics (a zero activation channel), every parameter (alpha,
bits, group_size, n_grid), contracts (the first alpha wins a tie; inputs unmodified),
boundaries (a one-point grid, an all-zero weight); fixed seeds throughout."""
import pytest

EXERCISE = "ex05_awq_search"


def test_solution_full_marks_and_stub_zero(g):
    g.assert_full_and_zero(EXERCISE)


@pytest.mark.parametrize("old, new, check, hint", [
    # scales not normalized
    ("return s / torch.sqrt(s.max() * s.min())", "return s", "scales_follow_activations_and_are_normalized",
     "sqrt(max * min)"),
    # scales inverted
    ("s = act_mean.clamp(min=1e-4) ** alpha", "s = act_mean.clamp(min=1e-4) ** -alpha",
     "scales_follow_activations_and_are_normalized", "inverted"),
    # no clamp: a silent channel gives 0 ** alpha and a division by zero
    ("s = act_mean.clamp(min=1e-4) ** alpha", "s = act_mean ** alpha", "scales_follow_activations_and_are_normalized",
     "clamp"),
    # clamps the caller's tensor in place
    ("s = act_mean.clamp(min=1e-4) ** alpha", "s = act_mean.clamp_(min=1e-4) ** alpha",
     "scales_follow_activations_and_are_normalized", "clamp_"),
    # the scale is not folded back
    ("w_q = fake_quantize(w * s, bits, group_size) / s", "w_q = fake_quantize(w * s, bits, group_size)",
     "finds_the_reference_alpha", "divide Q(w * s) by s"),
    # max instead of mean activation
    ("act_mean = x.abs().mean(dim=0)", "act_mean = x.abs().amax(dim=0)", "finds_the_reference_alpha", "mean of |x|"),
    # bits and group size ignored: the notebook's 4 bits, group 32 always
    ("w_q = fake_quantize(w * s, bits, group_size) / s", "w_q = fake_quantize(w * s, 4, 32) / s",
     "finds_the_reference_alpha", "given bits=3, group_size=64"),
    # the last alpha wins a tie
    ("if not losses or loss < min(losses):", "if not losses or loss <= min(losses):", "ties_and_a_one_point_grid",
     "first alpha"),
    # the grid includes alpha = 1 (n_grid + 1 points)
    ("for i in range(n_grid):\n        alpha = i / n_grid", "for i in range(n_grid + 1):\n        alpha = i / n_grid",
     "alpha_zero_is_round_to_nearest", "n_grid losses"),
    # scales the caller's weight in place
    ("w_q = fake_quantize(w * s, bits, group_size) / s", "w.mul_(s)\n        w_q = fake_quantize(w, bits, group_size) / s"
     "\n        w.div_(s)", "inputs_are_not_modified", None),
])
def test_typical_mistakes_lose_points(tmp_path, old, new, check, hint, g):
    g.assert_loses(g.variant(EXERCISE, tmp_path, old, new), check, hint)
