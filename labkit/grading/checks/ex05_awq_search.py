"""Checks for exercise 05: the AWQ scale search for one layer, against `labkit.quant`."""
from __future__ import annotations

import functools

import torch

from labkit.grading import check
from labkit.quant.awq import awq_scales as reference_scales
from labkit.quant.rtn import fake_quantize


def _layer(seed: int = 0, spiky: bool = False):
    """w [32, 128] and calibration x [256, 128] with a few outlier input channels."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(32, 128, generator=g) * 0.05
    x = torch.randn(256, 128, generator=g)
    x[:, [7, 50, 99]] *= 25
    if spiky:  # channels with rare huge spikes: large max, modest mean
        x[::64, [3, 70]] = 400.0
    return w, x


@functools.lru_cache(maxsize=None)
def _reference_search(seed: int, spiky: bool, bits: int, g: int, n_grid: int):
    """(best alpha, its scales, the losses) on `_layer(seed, spiky)`: the same for every answer graded."""
    w, x = _layer(seed, spiky)
    a = x.abs().mean(0)
    ref = x @ w.T
    losses = []
    for i in range(n_grid):
        s = reference_scales(a, i / n_grid)
        losses.append((x @ (fake_quantize(w * s, bits, g) / s).T - ref).pow(2).mean().item())
    best = min(range(n_grid), key=lambda i: (losses[i], i))
    return best / n_grid, reference_scales(a, best / n_grid), losses


@check(points=3)
def scales_follow_activations_and_are_normalized(impl):
    a = torch.tensor([0.01, 0.5, 2.0, 30.0])
    for alpha in (0.0, 0.25, 0.7):
        s = impl.awq_scales(a.clone(), alpha)
        assert isinstance(s, torch.Tensor) and s.shape == a.shape, "awq_scales should return one scale per channel"
        want = reference_scales(a, alpha)
        if not torch.allclose(s.float(), want, rtol=1e-4):
            raw = a.clamp(min=1e-4) ** alpha
            if torch.allclose(s.float(), raw, rtol=1e-4):
                raise AssertionError("normalize: divide a ** alpha by sqrt(max * min) so the scales centre on 1")
            if alpha and torch.allclose(s.float(), 1 / want, rtol=1e-4):
                raise AssertionError("scales are inverted: large activations should get s > 1")
            raise AssertionError(f"awq_scales(a, {alpha}) = {s.tolist()}, expected {want.tolist()}")
    zero_channel = torch.tensor([0.0, 1.0])
    s = impl.awq_scales(zero_channel, 0.5)
    assert torch.isfinite(s).all(), "clamp the activation means to >= 1e-4 before the power (a zero channel gave inf/nan)"
    assert zero_channel.tolist() == [0.0, 1.0], \
        "awq_scales changed the caller's activation means in place: use clamp(min=...), not clamp_"


@check(points=2)
def alpha_zero_is_round_to_nearest(impl):
    w, x = _layer(1)
    alpha, scales, losses = impl.search_scale(w, x, 4, 32, n_grid=10)
    assert isinstance(losses, (list, tuple)) and len(losses) == 10, "return the list of n_grid losses, one per alpha"
    rtn = (x @ fake_quantize(w, 4, 32).T - x @ w.T).pow(2).mean().item()
    assert abs(float(losses[0]) - rtn) <= 1e-6 * max(rtn, 1e-12) + 1e-9, \
        f"the first loss (alpha = 0, s = 1) should be plain RTN's {rtn:.4g}, got {float(losses[0]):.4g}"


@check(points=3)
def finds_the_reference_alpha(impl):
    for seed, spiky, bits, g, n_grid in ((2, False, 4, 32, 20), (3, True, 4, 32, 20), (5, False, 3, 64, 10)):
        w, x = _layer(seed, spiky)
        want_alpha, want_s, want_losses = _reference_search(seed, spiky, bits, g, n_grid)
        alpha, scales, losses = impl.search_scale(w.clone(), x.clone(), bits, g, n_grid=n_grid)
        ok = (abs(float(alpha) - want_alpha) < 1e-9 and torch.allclose(scales.float(), want_s, rtol=1e-4)
              and len(losses) == n_grid and all(abs(float(a) - b) <= 1e-3 * b for a, b in zip(losses, want_losses)))
        if not ok:
            hint = ""
            if (bits, g) != (4, 32) and all(abs(float(a) - b) <= 1e-6 * b for a, b in
                                            zip(losses, _reference_search(seed, spiky, 4, 32, n_grid)[2])):
                hint = f" The losses are those of 4 bits, group 32: quantize with the given bits={bits}, group_size={g}."
            elif sum(float(v) for v in losses) > 3 * sum(want_losses):
                hint = " The losses grow fast with alpha: did you forget to divide Q(w * s) by s?"
            elif torch.allclose(scales.float(), reference_scales(x.abs().amax(0), float(alpha)), rtol=1e-4):
                hint = " a is the mean of |x| over tokens, not the max."
            elif abs(float(alpha) - want_alpha) < 1e-9:
                hint = " Return the scales of the best alpha."
            raise AssertionError(f"{bits} bits, group {g}, n_grid {n_grid}: best alpha {float(alpha):g}, expected {want_alpha:g} "
                                 f"(losses {[round(float(v), 8) for v in losses[:4]]}...).{hint}")


@check(points=2)
def protecting_outliers_beats_rtn(impl):
    w, x = _layer(4)
    alpha, scales, losses = impl.search_scale(w, x, 4, 32, n_grid=20)
    best = min(float(v) for v in losses)
    assert alpha > 0, "with outlier input channels the best alpha should be > 0"
    assert best < 0.7 * float(losses[0]), f"the search should cut RTN's loss clearly: {best:.3g} vs {float(losses[0]):.3g}"


@check(points=1)
def ties_and_a_one_point_grid(impl):
    w, x = torch.zeros(8, 64), _layer(6)[1][:, :64]   # a zero weight quantizes exactly: every loss is 0
    alpha, scales, losses = impl.search_scale(w, x, 4, 32, n_grid=5)
    assert [float(v) for v in losses] == [0.0] * 5, f"a zero weight quantizes exactly: every loss is 0, got {losses}"
    assert float(alpha) == 0.0 and torch.allclose(scales.float(), torch.ones(64)), (
        f"on a tie the first alpha on the grid wins (0 here, with scales 1), got alpha {float(alpha):g}: "
        "replace the best only when a loss is strictly smaller")
    w, x = _layer(7)
    alpha, scales, losses = impl.search_scale(w, x, 4, 32, n_grid=1)
    assert len(losses) == 1 and float(alpha) == 0.0, \
        f"n_grid = 1 tries alpha = 0 only (plain round-to-nearest), got alpha {float(alpha):g} and {len(losses)} losses"


@check(points=1)
def inputs_are_not_modified(impl):
    w, x = _layer(8)
    impl.search_scale(w, x, 4, 32, n_grid=4)
    w0, x0 = _layer(8)
    assert torch.equal(w, w0), "search_scale changed the caller's weight (w *= s?): scale a copy, w * s"
    assert torch.equal(x, x0), "search_scale changed the caller's activations in place"
