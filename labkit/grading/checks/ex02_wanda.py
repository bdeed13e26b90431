"""Checks for exercise 02a: the Wanda score and its per-row mask, against labkit.prune.masks."""
from __future__ import annotations

import torch

from labkit.grading import check
from labkit.prune import masks


def _case(out: int = 6, cols: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, cols, generator=g)
    x = torch.randn(3, 20, cols, generator=g) * torch.linspace(0.1, 4.0, cols)  # channels of very different loudness
    x[..., 2] *= 25  # one loud channel
    return w, x


def _reference_mask(w, x, s):
    return masks.unstructured_mask(masks.wanda_scores(w, masks.input_norms(x)), s)


@check(points=3)
def scores_are_weight_times_input_l2_norm(impl):
    w, x = _case()
    want = masks.wanda_scores(w, masks.input_norms(x))
    got = impl.wanda_scores(w, x)
    assert tuple(got.shape) == tuple(w.shape), f"scores should have w's shape {tuple(w.shape)}, got {tuple(got.shape)}"
    got = got.float()
    if torch.allclose(got, want, rtol=1e-4):
        return
    flat = x.reshape(-1, x.shape[-1])
    hints = [(w.abs() * flat.abs().sum(0), "you used the L1 norm (sum of |x|); Wanda uses the L2 norm sqrt(sum x^2)"),
             (w.abs() * flat.abs().mean(0), "you used the mean |x|; Wanda uses the L2 norm sqrt(sum x^2) over tokens"),
             (w.abs() * flat.pow(2).sum(0), "you used the squared norm; take its square root"),
             (w * flat.norm(dim=0), "take |w|: a large negative weight matters as much as a large positive one"),
             (w.abs() * x[0].norm(dim=0), "the norm must run over every token of every leading dimension, "
                                          "not only the first sequence")]
    for wrong, hint in hints:
        if wrong.shape == got.shape and torch.allclose(got, wrong.float(), rtol=1e-4):
            raise AssertionError(hint)
    raise AssertionError("scores differ from |w_ij| * ||x_j||_2 (the L2 norm of input channel j over all tokens)")


def _mask(impl, w, x, s):
    keep = impl.wanda_mask(w, x, s)
    assert tuple(keep.shape) == tuple(w.shape), f"the mask should have w's shape {tuple(w.shape)}"
    assert keep.dtype == torch.bool, f"the mask should be a bool tensor, got {keep.dtype}"
    return keep


@check(points=3)
def mask_compares_within_each_row(impl):
    w, x = _case(seed=1)
    w[0] *= 0.01  # row 0 is tiny: a threshold over the whole matrix would empty it
    for s in (0.25, 0.5):
        keep = _mask(impl, w, x, s)
        per_row = keep.sum(1)
        if not (per_row == per_row[1]).all():
            raise AssertionError(f"rows keep different numbers of weights ({per_row.tolist()}) at sparsity {s}: "
                                 "compare scores within each output row, not across the whole matrix")
        assert torch.equal(keep, _reference_mask(w, x, s)), \
            f"at sparsity {s} the mask differs from removing each row's lowest |w| * ||x||_2"


@check(points=2)
def every_sparsity_removes_round_of_it(impl):
    w, x = _case(out=4, cols=10, seed=2)
    for s in (0.0, 0.1, 0.33, 0.47, 0.5, 0.66, 0.9):  # no .5 cases: round() there is a question of convention
        keep = _mask(impl, w, x, s)
        want = 10 - round(s * 10)
        assert (keep.sum(1) == want).all(), \
            f"sparsity {s} on rows of 10 should keep {want} per row (remove round({s} * 10)), kept {keep.sum(1).tolist()}"


@check(points=2)
def ties_remove_the_lower_index_first(impl):
    w = torch.tensor([[1.0, 1.0, 1.0, 1.0], [2.0, -1.0, 1.0, -2.0]])
    x = torch.ones(5, 4)
    keep = _mask(impl, w, x, 0.5)
    want = [[False, False, True, True], [True, False, False, True]]
    assert keep.tolist() == want, f"with tied scores the lower column goes first: expected {want}, got {keep.tolist()}"


@check(points=2)
def bad_sparsity_and_inputs_untouched(impl):
    w, x = _case(seed=3)
    w0, x0 = w.clone(), x.clone()
    for s in (1.0, -0.1, 1.5):
        try:
            impl.wanda_mask(w, x, s)
        except ValueError:
            continue
        raise AssertionError(f"sparsity {s} is outside [0, 1): raise ValueError")
    impl.wanda_scores(w, x)
    impl.wanda_mask(w, x, 0.5)
    assert torch.equal(w, w0) and torch.equal(x, x0), "w and x must not be modified (no in-place operations on them)"
