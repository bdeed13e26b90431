"""Exercise 02c (block influence): solutions score full marks, stubs zero, typical mistakes lose points.

Kinds of mistake covered: numerics (one cosine over the flattened tensor, the cosine over
tokens, 1 - forgotten, averaging before dividing over tokens of very different lengths), every
parameter (any leading shape, n from 0 to L - 1), contracts (ValueError for n >= L or n < 0;
inputs unmodified), boundaries (identity, scaled and reversed outputs, one token, ties)."""
import pytest

EXERCISE = "ex02_block_influence"


def test_solution_full_marks_and_stub_zero(g):
    g.assert_full_and_zero(EXERCISE)


@pytest.mark.parametrize("old, new, check, hint", [
    # one cosine over everything
    ("    cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))\n    return float(1 - cos.mean())",
     "    return float(1 - (a * b).sum() / (a.norm() * b.norm()))",
     "influence_is_one_minus_the_mean_token_cosine", "whole flattened tensor"),
    # the cosine over tokens (per hidden channel)
    ("    cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))",
     "    cos = (a * b).sum(0) / (a.norm(dim=0) * b.norm(dim=0))",
     "influence_is_one_minus_the_mean_token_cosine", "hidden dimension"),
    # the similarity, not the influence
    ("return float(1 - cos.mean())", "return float(cos.mean())",
     "influence_is_one_minus_the_mean_token_cosine", "1 minus"),
    # averaged before dividing: long tokens outweigh short ones
    ("    cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))\n    return float(1 - cos.mean())",
     "    return float(1 - (a * b).sum(-1).mean() / (a.norm(dim=-1) * b.norm(dim=-1)).mean())",
     "influence_is_one_minus_the_mean_token_cosine", "should be"),
    # the most influential layers dropped
    ("key=lambda i: (influence[i], -i))", "key=lambda i: (-influence[i], i))",
     "drops_the_lowest_in_index_order", "most"),
    # returned in the order of influence
    ("    return sorted(order[:n])", "    return order[:n]", "drops_the_lowest_in_index_order", "increasing index order"),
    # ties: the earlier layer dropped
    ("key=lambda i: (influence[i], -i))", "key=lambda i: (influence[i], i))", "ties_and_bad_counts", "later one"),
    # no count check
    ('    if not 0 <= n < len(influence):\n        raise ValueError(f"cannot drop {n} of {len(influence)} layers")\n', "",
     "ties_and_bad_counts", "ValueError"),
    # normalizes the caller's tensors in place
    ("    a = x_in.reshape(-1, x_in.shape[-1]).double()       # [tokens, hidden]",
     "    x_in /= x_in.norm(dim=-1, keepdim=True)\n    a = x_in.reshape(-1, x_in.shape[-1]).double()",
     "ties_and_bad_counts", "must not be modified"),
])
def test_typical_mistakes_lose_points(tmp_path, old, new, check, hint, g):
    g.assert_loses(g.variant(EXERCISE, tmp_path, old, new), check, hint)
