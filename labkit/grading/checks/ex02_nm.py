"""Checks for exercise 02b: an N:M mask, against labkit.prune.masks."""
from __future__ import annotations

import torch

from labkit.grading import check
from labkit.prune import masks


def _scores(rows: int = 4, cols: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(rows, cols, generator=torch.Generator().manual_seed(seed))


def _mask(impl, scores, n, m):
    keep = impl.nm_mask(scores, n, m)
    assert tuple(keep.shape) == tuple(scores.shape), f"the mask should have the scores' shape {tuple(scores.shape)}"
    assert keep.dtype == torch.bool, f"the mask should be a bool tensor, got {keep.dtype}"
    return keep


@check(points=3)
def groups_are_consecutive_inputs_of_a_row(impl):
    scores = _scores(rows=8, cols=16)
    keep = _mask(impl, scores, 2, 4)
    by_group = keep.reshape(8, 4, 4).sum(-1)
    if not (by_group == 2).all():
        if (keep.reshape(8, 4, 4).sum(1) == 2).all():
            raise AssertionError("groups are strided: a group is m *consecutive* inputs w[i, k*m:(k+1)*m] "
                                 "(reshape to [out, in // m, m])")
        if (keep.reshape(2, 4, 16).sum(1) == 2).all():
            raise AssertionError("groups run down the output dimension: they must run along the input dimension "
                                 "of each row")
        raise AssertionError(f"every group of 4 consecutive inputs should keep exactly 2, got {by_group.tolist()}")
    ref = masks.nm_mask(scores, 2, 4)
    if torch.equal(keep, ~ref):
        raise AssertionError("you kept the lowest scores: keep the n *highest* of each group")
    assert torch.equal(keep, ref), "the mask differs from keeping each group's 2 highest scores"


@check(points=3)
def every_pattern(impl):
    for (n, m), seed in (((2, 4), 1), ((4, 8), 2), ((1, 4), 3), ((3, 4), 4), ((1, 2), 5)):
        scores = _scores(rows=3, cols=16, seed=seed)
        keep = _mask(impl, scores, n, m)
        kept = keep.reshape(3, -1, m).sum(-1)
        if (kept == m - n).all() and n != m - n:
            raise AssertionError(f"{n}:{m} means keep {n} of every {m}; you kept {m - n}")
        assert torch.equal(keep, masks.nm_mask(scores, n, m)), f"the {n}:{m} mask differs from the n highest per group"


@check(points=2)
def ties_remove_the_lower_index_first(impl):
    scores = torch.tensor([[1.0, 1.0, 1.0, 1.0, 5.0, 3.0, 3.0, 0.0]])
    keep = _mask(impl, scores, 2, 4)
    want = [[False, False, True, True, True, False, True, False]]
    assert keep.tolist() == want, f"with tied scores the lower column goes first: expected {want}, got {keep.tolist()}"


@check(points=2)
def bad_patterns_and_input_untouched(impl):
    scores = _scores(rows=2, cols=12)
    before = scores.clone()
    for n, m, why in ((2, 8, "8 does not divide 12"), (4, 4, "n must be below m"), (0, 4, "n must be above 0")):
        try:
            impl.nm_mask(scores, n, m)
        except ValueError:
            continue
        except NotImplementedError:
            raise
        except Exception as e:
            raise AssertionError(f"nm_mask(scores [2, 12], {n}, {m}) should raise ValueError ({why}), "
                                 f"not {type(e).__name__}: check the arguments before reshaping") from None
        raise AssertionError(f"nm_mask(scores [2, 12], {n}, {m}) should raise ValueError: {why}")
    keep = _mask(impl, scores, 1, 3)  # the whole row is one group when m == in: here 4 groups of 3
    assert (keep.reshape(2, 4, 3).sum(-1) == 1).all(), "1:3 on rows of 12 should keep 1 in each of the 4 groups"
    assert torch.equal(scores, before), "scores must not be modified (no in-place operations on them)"
