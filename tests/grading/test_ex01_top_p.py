"""Exercise 01b (sampling filters): solutions score full marks, stubs zero, typical mistakes lose points.

Kinds of mistake covered: numerics (an unstabilized softmax on large logits or at a low
temperature), every parameter (temperature, k, p, each stage of the pipeline), contracts
(k <= 0 or k >= V and p >= 1 keep everything; the caller's logits unmodified), boundaries
(k = V, the token that crosses p, 3-D logits), fixed seeds and a fixed nucleus case."""
import pytest


EXERCISE = "ex01_top_p"


def test_solution_full_marks_and_stub_zero(g):
    g.assert_full_and_zero(EXERCISE)


@pytest.mark.parametrize("old, new, check, hint", [
    # temperature multiplies
    ("return logits / temperature", "return logits * temperature", "temperature_scales_logits", "Divide"),
    # missing temperature in the pipeline
    ("logits = apply_temperature(logits.float(), temperature)", "logits = logits.float()",
     "sampling_probs_pipeline", "temperature is missing"),
    # temperature after the filters
    ("logits = apply_temperature(logits.float(), temperature)\n    return top_p_filter(top_k_filter(logits, top_k), top_p).softmax(dim=-1)",
     "logits = top_p_filter(top_k_filter(logits.float(), top_k), top_p)\n    return apply_temperature(logits, temperature).softmax(dim=-1)",
     "sampling_probs_pipeline", "temperature first"),
    # a stage of the pipeline forgotten
    ("return top_p_filter(top_k_filter(logits, top_k), top_p).softmax(dim=-1)",
     "return top_p_filter(logits, top_p).softmax(dim=-1)", "sampling_probs_pipeline", "top_k was ignored"),
    ("return top_p_filter(top_k_filter(logits, top_k), top_p).softmax(dim=-1)",
     "return top_k_filter(logits, top_k).softmax(dim=-1)", "sampling_probs_pipeline", "top_p was ignored"),
    # off-by-one in the cumulative sum: inclusive instead of exclusive
    ("mass_above = probs.cumsum(dim=-1) - probs", "mass_above = probs.cumsum(dim=-1)", "top_p_keeps_the_nucleus",
     "crosses p"),
    # a token with exactly p ranked above it kept (> instead of >=)
    ('sorted_logits.masked_fill(mass_above >= p, float("-inf"))', 'sorted_logits.masked_fill(mass_above > p, float("-inf"))',
     "top_p_keeps_the_nucleus", "exactly p ranked above it"),
    # keeps tokens in sorted order instead of scattering back
    ("return torch.empty_like(logits).scatter(-1, order, sorted_logits)", "return sorted_logits",
     "top_p_keeps_the_nucleus", "original positions"),
    # an unstabilized softmax: exp / sum overflows for logits in the hundreds
    ("probs = sorted_logits.softmax(dim=-1)", "probs = sorted_logits.exp() / sorted_logits.exp().sum(-1, keepdim=True)",
     "large_logits_stay_finite", "softmax"),
    # top-k off by one
    ("values[..., -1:]", "values[..., -2:-1]", "top_k_keeps_k_largest", None),
    # top-k with k=0 treated literally
    ("if k <= 0 or k >= logits.shape[-1]:", "if k >= logits.shape[-1]:", "top_k_keeps_k_largest", None),
    # k >= V handed to torch.topk, which refuses k > V
    ("if k <= 0 or k >= logits.shape[-1]:", "if k <= 0:", "top_k_keeps_k_largest", "k >= V"),
    # one threshold for the whole batch, the first row's (right for one row [V], wrong for a batch)
    ("kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]",
     "kth_largest = torch.topk(logits.reshape(-1, logits.shape[-1]), k, dim=-1).values[:, -1:][0]",
     "top_k_keeps_k_largest", None),
    # filters that write into the caller's logits
    ("return logits.masked_fill(logits < kth_largest, float(\"-inf\"))",
     "return logits.masked_fill_(logits < kth_largest, float(\"-inf\"))", "logits_are_not_modified", "masked_fill_"),
    ("return logits / temperature", "logits /= temperature\n    return logits", "logits_are_not_modified",
     "apply_temperature"),
])
def test_typical_mistakes_lose_points(tmp_path, old, new, check, hint, g):
    g.assert_loses(g.variant(EXERCISE, tmp_path, old, new), check, hint)


def test_top_p_that_drops_the_top_token_loses_points(tmp_path, g):
    report = g.variant(EXERCISE, tmp_path, "mass_above >= p", "(mass_above + probs) > p")
    assert {"top_p_keeps_the_nucleus", "top_p_edge_cases"} <= set(g.failed(report))
