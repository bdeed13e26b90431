"""Exercise 01a (RMSNorm, RoPE): solutions score full marks, stubs zero, typical mistakes lose points.

Kinds of mistake covered: numerics (fp16 squares overflow, eps inside the root), every
parameter (eps, weight, head_dim, theta, positions), contracts (the output dtype; inputs not
modified in place), boundaries (one token per row, position 0), fixed seeds throughout."""
import pytest

EXERCISE = "ex01_rmsnorm"


def test_solution_full_marks_and_stub_zero(g):
    g.assert_full_and_zero(EXERCISE)


@pytest.mark.parametrize("old, new, check, hint", [
    # eps outside the square root
    ("h / torch.sqrt(h.pow(2).mean(dim=-1, keepdim=True) + eps)", "h / (torch.sqrt(h.pow(2).mean(dim=-1, keepdim=True)) + eps)",
     "rms_norm_eps_inside_the_root", "inside the square root"),
    # no eps at all
    ("h / torch.sqrt(h.pow(2).mean(dim=-1, keepdim=True) + eps)", "h / torch.sqrt(h.pow(2).mean(dim=-1, keepdim=True))",
     "rms_norm_eps_inside_the_root", "ignored"),
    # the eps argument ignored: the default 1e-5 always
    ("mean(dim=-1, keepdim=True) + eps)", "mean(dim=-1, keepdim=True) + 1e-5)", "rms_norm_eps_inside_the_root",
     "`eps` argument"),
    # sum instead of mean
    ("h.pow(2).mean(dim=-1, keepdim=True)", "h.pow(2).sum(dim=-1, keepdim=True)", "rms_norm_matches_reference", "mean of the squares"),
    # weight forgotten
    ("return weight * h.to(x.dtype)", "return h.to(x.dtype)", "rms_norm_matches_reference", "Multiply by `weight`"),
    # LayerNorm instead
    ("h = h / torch.sqrt(h.pow(2).mean(dim=-1, keepdim=True) + eps)",
     "h = (h - h.mean(-1, keepdim=True)) / torch.sqrt(h.var(-1, unbiased=False, keepdim=True) + 1e-5)",
     "rms_norm_matches_reference", "LayerNorm"),
    # returns float32 for a half-precision input
    ("return weight * h.to(x.dtype)", "return weight.float() * h", "rms_norm_half_precision", "output"),
    # computes in the input's dtype: fp16 squares overflow
    ("h = x.float()", "h = x", "rms_norm_half_precision", "overflow"),
    # exponent i / D instead of 2i / D
    ("i = torch.arange(0, head_dim, 2, dtype=torch.float64)", "i = torch.arange(head_dim // 2, dtype=torch.float64)",
     "rope_inv_freq_matches_reference", "2i / D"),
    # wrong sign of the rotation
    ("torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)", "torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)",
     "apply_rope_matches_reference", None),
    # theta ignored: always the default base
    ("rope_inv_freq(x.shape[-1], theta)", "rope_inv_freq(x.shape[-1])", "apply_rope_matches_reference", "`theta`"),
    # positions 0 .. T-1 instead of the given ones
    ("angles = positions[..., None].float()", "angles = torch.arange(x.shape[1])[None, :, None].float()",
     "apply_rope_matches_reference", "Use `positions`"),
    # angles from fp16 positions: whole numbers above 2048 round
    ("angles = positions[..., None].float()", "angles = positions[..., None].half().float()",
     "apply_rope_matches_reference", "float32"),
    # every position 0
    ("angles = positions[..., None].float()", "angles = 0 * positions[..., None].float()",
     "apply_rope_matches_reference", None),
    # normalizes the caller's tensor in place
    ("h = x.float()\n    h = h / torch.sqrt", "h = x.float()\n    h /= torch.sqrt", "inputs_are_not_modified", "in place"),
])
def test_typical_mistakes_lose_points(tmp_path, old, new, check, hint, g):
    g.assert_loses(g.variant(EXERCISE, tmp_path, old, new), check, hint)


def test_interleaved_pairs_lose_points(tmp_path, g):
    """GPT-J style RoPE rotates neighbours (2i, 2i+1); Llama checkpoints expect (i, i + D/2)."""
    old = "    x1, x2 = x.float().chunk(2, dim=-1)\n    out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)\n"
    new = ("    x1, x2 = x.float()[..., 0::2], x.float()[..., 1::2]\n"
           "    out = torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)\n")
    g.assert_loses(g.variant(EXERCISE, tmp_path, old, new), "apply_rope_matches_reference", "neighbouring pairs")


def test_rope_written_into_its_input_loses_points(tmp_path, g):
    old = "    x1, x2 = x.float().chunk(2, dim=-1)\n    out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)\n"
    new = ("    x1, x2 = x.chunk(2, dim=-1)\n    a, b = x1 * cos - x2 * sin, x2 * cos + x1 * sin\n"
           "    x1.copy_(a)\n    x2.copy_(b)\n    out = x\n")
    g.assert_loses(g.variant(EXERCISE, tmp_path, old, new), "inputs_are_not_modified", "apply_rope's x")
