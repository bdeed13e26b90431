"""Unstructured and N:M pruning: masks, SparseGPT against an explicit OBS computation, the
layer-by-layer driver on a tiny model."""
import copy

import pytest
import torch

from labkit.prune import masks
from labkit.prune.oneshot import layer_linears, prune_oneshot
from labkit.prune.sparsegpt import hessian, sparsegpt_prune

from .conftest import tiny_ids, tiny_model


def test_wanda_compares_within_rows_and_weighs_by_the_input_norm():
    w = torch.tensor([[1.0, -2.0, 3.0, 4.0], [10.0, 20.0, -30.0, 40.0]])
    x = torch.tensor([[3.0, 0.0, 0.0, 0.0], [4.0, 1.0, 0.1, 0.1]])  # channel 0 is loud: norm 5
    scores = masks.wanda_scores(w, masks.input_norms(x))
    assert torch.allclose(scores[0], torch.tensor([5.0, 2.0, 0.3, 0.4]))
    keep = masks.unstructured_mask(scores, 0.5)
    assert keep.tolist() == [[True, True, False, False], [True, True, False, False]]
    # one threshold for the whole matrix would have emptied the first row
    assert masks.unstructured_mask(masks.magnitude_scores(w), 0.5, per_row=False)[0].sum() == 0


def test_unstructured_counts_and_ties():
    scores = torch.rand(8, 40, generator=torch.Generator().manual_seed(0))
    for s in (0.0, 0.1, 0.5, 0.7):
        assert (masks.unstructured_mask(scores, s).sum(1) == 40 - round(40 * s)).all()
    assert masks.unstructured_mask(torch.ones(1, 4), 0.5).tolist() == [[False, False, True, True]]
    with pytest.raises(ValueError, match="outside"):
        masks.unstructured_mask(scores, 1.0)


def test_nm_mask_keeps_n_in_every_group_along_the_input():
    scores = torch.rand(6, 16, generator=torch.Generator().manual_seed(1))
    for n, m in ((2, 4), (4, 8), (1, 4)):
        keep = masks.nm_mask(scores, n, m)
        assert (keep.view(6, -1, m).sum(-1) == n).all()
        kept_min = torch.where(keep, scores, torch.inf).view(6, -1, m).amin(-1)
        dropped_max = torch.where(keep, -torch.inf, scores).view(6, -1, m).amax(-1)
        assert (kept_min > dropped_max).all()
    with pytest.raises(ValueError, match="does not divide"):
        masks.nm_mask(torch.rand(2, 6), 2, 4)
    assert masks.parse_pattern("2:4") == (2, 4)
    for bad in ("4:4", "2-4", "0:4"):
        with pytest.raises(ValueError):
            masks.parse_pattern(bad)


def obs_reference(w: torch.Tensor, H: torch.Tensor, pruned: torch.Tensor) -> torch.Tensor:
    """Column by column with an explicitly inverted Hessian of the columns not yet processed."""
    w = w.double().clone()
    H = H.double() + 0.01 * H.diagonal().mean() * torch.eye(H.shape[0], dtype=torch.float64)
    for i in range(w.shape[1]):
        inv = torch.linalg.inv(H[i:, i:])
        err = torch.where(pruned[:, i], w[:, i], 0.0)
        w[:, i:] -= (err / inv[0, 0])[:, None] * inv[0][None, :]
    return w


@pytest.mark.parametrize("sparsity, n, m", [(0.5, 0, 0), (0.3, 0, 0), (None, 2, 4)])
def test_sparsegpt_is_optimal_brain_surgeon_column_by_column(sparsity, n, m):
    g = torch.Generator().manual_seed(2)
    w = torch.randn(8, 24, generator=g)
    x = torch.randn(200, 24, generator=g) @ torch.randn(24, 24, generator=g)  # correlated channels, as in LLMs
    H = hessian(x)
    out = sparsegpt_prune(w, H, sparsity or 0.0, n, m, block=8)  # three blocks: the lazy update is exercised
    pruned = out == 0
    if m:
        assert (pruned.view(8, -1, m).sum(-1) == m - n).all()
    else:
        for i1 in range(0, 24, 8):  # the fraction is chosen per block of columns
            assert pruned[:, i1:i1 + 8].sum() == round(64 * sparsity)
    assert torch.allclose(out.double(), obs_reference(w, H, pruned), atol=1e-4)
    # the update pays: the output error is far below that of zeroing the same weights
    err = lambda v: ((x @ (v - w).T) ** 2).sum()
    assert err(out) < 0.7 * err(w * ~pruned)


def test_sparsegpt_leaves_dead_inputs_zero_and_a_dense_layer_alone():
    g = torch.Generator().manual_seed(3)
    w, x = torch.randn(4, 8, generator=g), torch.randn(50, 8, generator=g)
    x[:, 5] = 0
    out = sparsegpt_prune(w, hessian(x), 0.0)
    assert (out[:, 5] == 0).all() and torch.allclose(out[:, :5], w[:, :5], atol=1e-6)


def captured_inputs(model, ids, layer: int, name: str) -> torch.Tensor:
    seen = []
    module = layer_linears(model.model.layers[layer])[name]
    h = module.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    model(ids)
    h.remove()
    return seen[0]


def test_wanda_is_sequential_on_the_pruned_earlier_layers():
    dense, ids = tiny_model(), tiny_ids()
    model = copy.deepcopy(dense)
    report = prune_oneshot(model, ids, "wanda", 0.5)
    assert report["linear_sparsity"] == 0.5 and all(v == 0.5 for row in report["layers"] for v in row.values())
    # layer 3's mask comes from the inputs the pruned layers 0-2 produce, not the dense ones
    for source, expect_equal in ((model, True), (dense, False)):
        x = captured_inputs(source, ids, 3, "q_proj")
        w = layer_linears(dense.model.layers[3])["q_proj"].weight
        keep = masks.unstructured_mask(masks.wanda_scores(w, masks.input_norms(x)), 0.5)
        same = torch.equal(keep, layer_linears(model.model.layers[3])["q_proj"].weight != 0)
        assert same == expect_equal


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_every_method_prunes_every_projection_to_the_pattern(method):
    model, ids = tiny_model(), tiny_ids()
    prune_oneshot(model, ids, method, pattern="2:4")
    for layer in model.model.layers:
        for w in (lin.weight for lin in layer_linears(layer).values()):
            assert ((w != 0).view(w.shape[0], -1, 4).sum(-1) <= 2).all()
            assert masks.sparsity_of(w) == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("kwargs, message", [
    (dict(method="wanda", sparsity=1.0), "outside"),
    (dict(method="wanda", sparsity=-0.1), "outside"),
    (dict(method="wanda", pattern="2:3"), "does not divide"),
    (dict(method="wanda"), "either"),
    (dict(method="wanda", sparsity=0.5, pattern="2:4"), "either"),
    (dict(method="obs", sparsity=0.5), "unknown method"),
])
def test_impossible_settings_change_nothing(kwargs, message):
    model, ids = tiny_model(), tiny_ids()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=message):
        prune_oneshot(model, ids, **kwargs)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
