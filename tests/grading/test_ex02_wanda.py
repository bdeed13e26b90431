"""Exercise 02a (Wanda): solutions score full marks, stubs zero, typical mistakes lose points.

Kinds of mistake covered: numerics (the wrong norm: L1, mean, squared; no |w|; the norm over
one sequence only), every parameter (sparsities 0 to 0.9, 3-D inputs), contracts (ValueError
outside [0, 1); inputs unmodified), boundaries (sparsity 0, ties); fixed seeds throughout."""
import pytest

EXERCISE = "ex02_wanda"


def test_solution_full_marks_and_stub_zero(g):
    g.assert_full_and_zero(EXERCISE)


@pytest.mark.parametrize("old, new, check, hint", [
    # one threshold over the whole matrix instead of per row
    ("    lowest = torch.sort(scores, dim=1, stable=True).indices[:, :n_remove]   # per row, ties in index order\n"
     "    keep = torch.ones_like(scores, dtype=torch.bool)\n    keep.scatter_(1, lowest, False)\n    return keep",
     "    flat = scores.reshape(-1)\n    lowest = torch.sort(flat, stable=True).indices[:n_remove * scores.shape[0]]\n"
     "    keep = torch.ones_like(flat, dtype=torch.bool)\n    keep[lowest] = False\n    return keep.view_as(scores)",
     "mask_compares_within_each_row", "within each output row"),
    # the L1 norm
    ("norms = tokens.pow(2).sum(dim=0).sqrt()", "norms = tokens.abs().sum(dim=0)",
     "scores_are_weight_times_input_l2_norm", "L1 norm"),
    # the mean magnitude (AWQ's statistic, not Wanda's)
    ("norms = tokens.pow(2).sum(dim=0).sqrt()", "norms = tokens.abs().mean(dim=0)",
     "scores_are_weight_times_input_l2_norm", "mean |x|"),
    # the squared norm
    ("norms = tokens.pow(2).sum(dim=0).sqrt()", "norms = tokens.pow(2).sum(dim=0)",
     "scores_are_weight_times_input_l2_norm", "squared norm"),
    # signed weights
    ("return w.abs().float() * norms[None, :]", "return w.float() * norms[None, :]",
     "scores_are_weight_times_input_l2_norm", "|w|"),
    # only the first sequence of a batch
    ("tokens = x.reshape(-1, x.shape[-1]).float()", "tokens = x[0].float() if x.dim() == 3 else x.float()",
     "scores_are_weight_times_input_l2_norm", "every token"),
    # the norm over channels instead of tokens
    ("norms = tokens.pow(2).sum(dim=0).sqrt()", "norms = tokens.pow(2).sum(dim=1).sqrt().mean()",
     "scores_are_weight_times_input_l2_norm", None),
    # int() instead of round(): 0.47 * 10 removes 4 instead of 5
    ("n_remove = round(sparsity * w.shape[1])", "n_remove = int(sparsity * w.shape[1])",
     "every_sparsity_removes_round_of_it", "round(0.47 * 10)"),
    # topk of the lowest without a stable order: ties go the other way
    ("lowest = torch.sort(scores, dim=1, stable=True).indices[:, :n_remove]",
     "lowest = torch.sort(scores, dim=1, descending=True, stable=True).indices.flip(1)[:, :n_remove]",
     "ties_remove_the_lower_index_first", "lower column goes first"),
    # no range check
    ('    if not 0 <= sparsity < 1:\n        raise ValueError(f"sparsity {sparsity} is outside [0, 1)")\n', "",
     "bad_sparsity_and_inputs_untouched", "ValueError"),
    # zeroing the weights in place
    ("    keep.scatter_(1, lowest, False)\n    return keep",
     "    keep.scatter_(1, lowest, False)\n    w.mul_(keep)\n    return keep",
     "bad_sparsity_and_inputs_untouched", "must not be modified"),
])
def test_typical_mistakes_lose_points(tmp_path, old, new, check, hint, g):
    g.assert_loses(g.variant(EXERCISE, tmp_path, old, new), check, hint)
