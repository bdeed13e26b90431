"""Exercise 02b (N:M mask): solutions score full marks, stubs zero, typical mistakes lose points.

Kinds of mistake covered: groups along the wrong axis or strided, the lowest kept, N and M-N
swapped (every pattern 1:2 to 4:8), ties, contracts (ValueError when m does not divide the
input or n is out of range; input unmodified), boundaries (groups of 3, rows of 12)."""
import pytest

EXERCISE = "ex02_nm"


def test_solution_full_marks_and_stub_zero(g):
    g.assert_full_and_zero(EXERCISE)


@pytest.mark.parametrize("old, new, check, hint", [
    # strided groups: [out, m, in // m] takes every (in // m)-th input
    ("    groups = scores.reshape(rows, cols // m, m)                       # [out, groups, m]\n"
     "    lowest = torch.sort(groups, dim=-1, stable=True).indices[..., : m - n]\n"
     "    keep = torch.ones_like(groups, dtype=torch.bool)\n    keep.scatter_(-1, lowest, False)\n"
     "    return keep.reshape(rows, cols)",
     "    groups = scores.reshape(rows, m, cols // m)\n"
     "    lowest = torch.sort(groups, dim=1, stable=True).indices[:, : m - n]\n"
     "    keep = torch.ones_like(groups, dtype=torch.bool)\n    keep.scatter_(1, lowest, False)\n"
     "    return keep.reshape(rows, cols)",
     "groups_are_consecutive_inputs_of_a_row", "strided"),
    # groups down the output dimension
    ("    groups = scores.reshape(rows, cols // m, m)                       # [out, groups, m]\n"
     "    lowest = torch.sort(groups, dim=-1, stable=True).indices[..., : m - n]\n"
     "    keep = torch.ones_like(groups, dtype=torch.bool)\n    keep.scatter_(-1, lowest, False)\n"
     "    return keep.reshape(rows, cols)",
     "    groups = scores.t().reshape(cols, rows // m, m)\n"
     "    lowest = torch.sort(groups, dim=-1, stable=True).indices[..., : m - n]\n"
     "    keep = torch.ones_like(groups, dtype=torch.bool)\n    keep.scatter_(-1, lowest, False)\n"
     "    return keep.reshape(cols, rows).t()",
     "groups_are_consecutive_inputs_of_a_row", "output dimension"),
    # keeps the lowest
    ("lowest = torch.sort(groups, dim=-1, stable=True).indices[..., : m - n]",
     "lowest = torch.sort(groups, dim=-1, descending=True, stable=True).indices[..., : m - n]",
     "groups_are_consecutive_inputs_of_a_row", "highest"),
    # n and m - n confused: keeps m - n
    ("indices[..., : m - n]", "indices[..., :n]", "every_pattern", "you kept"),
    # unstable order: ties go the other way
    ("lowest = torch.sort(groups, dim=-1, stable=True).indices[..., : m - n]",
     "lowest = torch.sort(groups.flip(-1), dim=-1, stable=True).indices[..., : m - n]\n    lowest = m - 1 - lowest",
     "ties_remove_the_lower_index_first", "lower column goes first"),
    # no divisibility check (reshape fails with a RuntimeError, not a ValueError)
    ('    if cols % m:\n        raise ValueError(f"m = {m} does not divide the input dimension {cols}")\n', "",
     "bad_patterns_and_input_untouched", "8 does not divide 12"),
    # no check of n
    ('    if not 0 < n < m:\n        raise ValueError(f"{n}:{m} needs 0 < n < m")\n', "",
     "bad_patterns_and_input_untouched", "n must be"),
    # masks the scores in place
    ("    return keep.reshape(rows, cols)", "    scores.mul_(keep.reshape(rows, cols))\n    return keep.reshape(rows, cols)",
     "bad_patterns_and_input_untouched", "must not be modified"),
])
def test_typical_mistakes_lose_points(tmp_path, old, new, check, hint, g):
    g.assert_loses(g.variant(EXERCISE, tmp_path, old, new), check, hint)
