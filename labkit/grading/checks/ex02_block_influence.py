"""Checks for exercise 02c: block influence and which layers to drop, against labkit.prune.depth."""
from __future__ import annotations

import torch

from labkit.grading import check
from labkit.prune.depth import cosine_influence, layers_to_drop


def _states(seed: int = 0, shape=(2, 7, 12)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g)
    scale = torch.rand(*shape[:-1], 1, generator=g) * 10 + 0.1  # tokens of very different lengths
    return x * scale, x * scale + torch.randn(*shape, generator=g) * 0.8


@check(points=3)
def influence_is_one_minus_the_mean_token_cosine(impl):
    x_in, x_out = _states()
    got, want = float(impl.block_influence(x_in, x_out)), cosine_influence(x_in, x_out)
    if abs(got - want) < 1e-5:
        return
    a, b = x_in.reshape(-1, 12).double(), x_out.reshape(-1, 12).double()
    whole = 1 - float((a * b).sum() / (a.norm() * b.norm()))
    hints = [(1 - want, "that is the mean cosine itself: the influence is 1 minus it"),
             (whole, "that is one cosine over the whole flattened tensor: take the cosine of each token's "
                     "vector over the hidden dimension, then average over tokens"),
             (1 - float(torch.nn.functional.cosine_similarity(a.T, b.T, dim=-1).mean()),
              "the cosine runs over the hidden dimension (last axis), one per token, not over tokens")]
    for wrong, hint in hints:
        if abs(got - wrong) < 1e-5:
            raise AssertionError(hint)
    raise AssertionError(f"block influence {got:.6f} should be {want:.6f} = 1 - mean over tokens of cos(x_in, x_out)")


@check(points=2)
def boundaries_and_any_leading_shape(impl):
    x, _ = _states(seed=1, shape=(5, 12))
    assert abs(float(impl.block_influence(x, x))) < 1e-6, "a block whose output equals its input has influence 0"
    assert abs(float(impl.block_influence(x, 3 * x))) < 1e-6, "scaling a token's vector does not turn it: influence 0"
    assert abs(float(impl.block_influence(x, -x)) - 2) < 1e-6, "output = -input turns every token around: influence 2"
    one = x[:1]
    assert abs(float(impl.block_influence(one, one + 1)) - cosine_influence(one, one + 1)) < 1e-5, \
        "a single token [1, hidden] must work too"
    a, b = _states(seed=2, shape=(2, 3, 4, 12))
    assert abs(float(impl.block_influence(a, b)) - cosine_influence(a, b)) < 1e-5, \
        "any number of leading dimensions: every vector along the last axis is one token"


@check(points=3)
def drops_the_lowest_in_index_order(impl):
    scores = [0.9, 0.05, 0.3, 0.02, 0.4, 0.01, 0.6]
    for n in (0, 1, 3, 6):
        got = list(impl.layers_to_drop(scores, n))
        want = layers_to_drop(torch.tensor(scores), n)
        if sorted(got) == sorted(range(7), key=lambda i: -scores[i])[:n] and n:
            raise AssertionError(f"you dropped the {n} *most* influential layers; drop the least influential")
        if sorted(got) == want and got != want:
            raise AssertionError(f"return the layers in increasing index order: {want}, got {got}")
        assert got == want, f"dropping {n} of {scores}: expected {want}, got {got}"


@check(points=2)
def ties_and_bad_counts(impl):
    got = list(impl.layers_to_drop([0.5, 0.1, 0.3, 0.1], 1))
    assert got == [3], f"layers 1 and 3 tie at 0.1: the later one (3) goes first, got {got}"
    for n in (4, 5, -1):
        try:
            impl.layers_to_drop([0.5, 0.1, 0.3, 0.1], n)
        except ValueError:
            continue
        raise AssertionError(f"dropping {n} of 4 layers should raise ValueError (keep at least one layer)")
    x_in, x_out = _states(seed=3)
    a, b = x_in.clone(), x_out.clone()
    impl.block_influence(x_in, x_out)
    assert torch.equal(a, x_in) and torch.equal(b, x_out), "x_in and x_out must not be modified"
