"""Exercise 01a (RMSNorm, RoPE): solutions score full marks, stubs zero, typical mistakes lose points."""
import pytest

EXERCISE = "ex01_rmsnorm"


def test_solution_full_marks(g):
    report = g.solution(EXERCISE)
    assert report.score == report.max > 0, g.failed(report)


def test_stub_scores_zero(g):
    assert g.stub(EXERCISE).score == 0


@pytest.mark.parametrize("old, new, check, hint", [
    # eps outside the square root
    ("h / torch.sqrt(h.pow(2).mean(dim=-1, keepdim=True) + eps)", "h / (torch.sqrt(h.pow(2).mean(dim=-1, keepdim=True)) + eps)",
     "rms_norm_eps_inside_the_root", "inside the square root"),
    # no eps at all
    ("h / torch.sqrt(h.pow(2).mean(dim=-1, keepdim=True) + eps)", "h / torch.sqrt(h.pow(2).mean(dim=-1, keepdim=True))",
     "rms_norm_eps_inside_the_root", "ignored"),
    # sum instead of mean
    ("h.pow(2).mean(dim=-1, keepdim=True)", "h.pow(2).sum(dim=-1, keepdim=True)", "rms_norm_matches_reference", "mean of the squares"),
    # weight forgotten
    ("return weight * h.to(x.dtype)", "return h.to(x.dtype)", "rms_norm_matches_reference", "Multiply by `weight`"),
    # LayerNorm instead
    ("h = h / torch.sqrt(h.pow(2).mean(dim=-1, keepdim=True) + eps)",
     "h = (h - h.mean(-1, keepdim=True)) / torch.sqrt(h.var(-1, unbiased=False, keepdim=True) + 1e-5)",
     "rms_norm_matches_reference", "LayerNorm"),
    # returns float32 for a bf16 input
    ("return weight * h.to(x.dtype)", "return weight.float() * h", "rms_norm_keeps_dtype", "bfloat16"),
    # exponent i / D instead of 2i / D
    ("i = torch.arange(0, head_dim, 2, dtype=torch.float64)", "i = torch.arange(head_dim // 2, dtype=torch.float64)",
     "rope_inv_freq_matches_reference", "2i / D"),
    # wrong sign of the rotation
    ("torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)", "torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)",
     "apply_rope_matches_reference", None),
])
def test_typical_mistakes_lose_points(tmp_path, old, new, check, hint, g):
    report = g.variant(EXERCISE, tmp_path, old, new)
    failed = g.failed(report)
    assert check in failed, f"{check} should fail; failures: {failed}"
    if hint:
        assert hint in failed[check], failed[check]


def test_interleaved_pairs_lose_points(tmp_path, g):
    """GPT-J style RoPE rotates neighbours (2i, 2i+1); Llama checkpoints expect (i, i + D/2)."""
    old = "    x1, x2 = x.float().chunk(2, dim=-1)\n    out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)\n"
    new = ("    x1, x2 = x.float()[..., 0::2], x.float()[..., 1::2]\n"
           "    out = torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)\n")
    failed = g.failed(g.variant(EXERCISE, tmp_path, old, new))
    assert "neighbouring pairs" in failed["apply_rope_matches_reference"]


def test_position_ignored_loses_points(tmp_path, g):
    report = g.variant(EXERCISE, tmp_path, "angles = positions[..., None].float()", "angles = 0 * positions[..., None].float()")
    assert "apply_rope_matches_reference" in g.failed(report)
