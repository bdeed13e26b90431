"""Exercise 01b (sampling filters): solutions score full marks, stubs zero, typical mistakes lose points."""
import pytest


EXERCISE = "ex01_top_p"


def test_solution_full_marks(g):
    report = g.solution(EXERCISE)
    assert report.score == report.max > 0, g.failed(report)


def test_stub_scores_zero(g):
    assert g.stub(EXERCISE).score == 0


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
    # off-by-one in the cumulative sum: inclusive instead of exclusive
    ("mass_above = probs.cumsum(dim=-1) - probs", "mass_above = probs.cumsum(dim=-1)", "top_p_keeps_the_nucleus",
     "crosses p"),
    # keeps tokens in sorted order instead of scattering back
    ("return torch.empty_like(logits).scatter(-1, order, sorted_logits)", "return sorted_logits",
     "top_p_keeps_the_nucleus", "original positions"),
    # top-k off by one
    ("values[..., -1:]", "values[..., -2:-1]", "top_k_keeps_k_largest", None),
    # top-k with k=0 treated literally
    ("if k <= 0 or k >= logits.shape[-1]:", "if k >= logits.shape[-1]:", "top_k_keeps_k_largest", None),
])
def test_typical_mistakes_lose_points(tmp_path, old, new, check, hint, g):
    report = g.variant(EXERCISE, tmp_path, old, new)
    failed = g.failed(report)
    assert report.score < report.max
    assert check in failed, f"{check} should fail; failures: {failed}"
    if hint:
        assert hint in failed[check], failed[check]


def test_top_p_that_drops_the_top_token_loses_points(tmp_path, g):
    report = g.variant(EXERCISE, tmp_path, "mass_above >= p", "(mass_above + probs) > p")
    assert {"top_p_keeps_the_nucleus", "top_p_edge_cases"} <= set(g.failed(report))
