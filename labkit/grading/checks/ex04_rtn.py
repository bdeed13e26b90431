"""Checks for exercise 04a: asymmetric group-wise RTN, against a plain reference written here."""
from __future__ import annotations

import torch

from labkit.grading import check


def _reference(w: torch.Tensor, bits: int, g: int):
    n, k = w.shape
    qmax = 2**bits - 1
    x = w.float().reshape(n, k // g, g)
    lo, hi = x.amin(-1), x.amax(-1)
    scale = ((hi - lo) / qmax).clamp(min=1e-8)
    zero = torch.round(-lo / scale).clamp(0, qmax)
    q = torch.clamp(torch.round(x / scale[..., None]) + zero[..., None], 0, qmax).reshape(n, k)
    return q, scale, zero


def _weights(n: int = 8, k: int = 64, seed: int = 0) -> torch.Tensor:
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(seed))
    w[:, 5] *= 8  # an outlier channel: its group needs a wider range than the others
    w[0] = w[0].abs() + 0.1  # an all-positive row: -min / scale < 0, the zero point clamps to 0
    w[1] = -w[1].abs() - 0.1  # an all-negative row: -min / scale > qmax, the zero point clamps to qmax
    w[2] *= 1e-4  # tiny weights: their scales are ~1e-5, far above the 1e-8 floor
    return w


def _result(impl, w, bits, g):
    out = impl.quantize_groupwise(w, bits, g)
    assert isinstance(out, tuple) and len(out) == 3, "quantize_groupwise should return (q, scale, zero)"
    q, scale, zero = out
    n, k = w.shape
    assert tuple(q.shape) == (n, k), f"q should have w's shape {(n, k)}, got {tuple(q.shape)}"
    for name, t in (("scale", scale), ("zero", zero)):
        if tuple(t.shape) == (k // g, n) and n != k // g:
            raise AssertionError(f"{name} has shape {tuple(t.shape)}: transposed. Keep one row per output channel: [N, K // g] = {(n, k // g)}")
        assert tuple(t.shape) == (n, k // g), f"{name} should be [N, K // g] = {(n, k // g)}, got {tuple(t.shape)}"
    return q.float(), scale.float(), zero.float()


@check(points=2)
def shapes_and_code_range(impl):
    for bits, g in ((4, 32), (8, 16), (3, 64)):
        q, scale, zero = _result(impl, _weights(), bits, g)
        qmax = 2**bits - 1
        assert torch.equal(q, q.round()), "q must hold whole numbers (round before storing)"
        assert q.min() >= 0 and q.max() <= qmax, f"{bits}-bit codes must lie in [0, {qmax}], got [{q.min():g}, {q.max():g}]"
        assert q.max() == qmax and q.min() == 0, f"{bits}-bit codes should use the full range [0, {qmax}] (qmax = 2**bits - 1)"
        assert (zero >= 0).all() and (zero <= qmax).all(), f"zero points must be clamped to [0, {qmax}]"


@check(points=3)
def groups_are_consecutive_input_channels(impl):
    w = torch.zeros(4, 64)
    w[:, :32] = torch.linspace(-1, 1, 32)           # group 0: range 2
    w[:, 32:] = torch.linspace(-10, 10, 32)         # group 1: range 20
    _, scale, _ = _result(impl, w, 4, 32)
    want = torch.tensor([2 / 15, 20 / 15]).expand(4, 2)
    if not torch.allclose(scale, want, rtol=1e-4):
        raise AssertionError(f"row 0 scales {scale[0].tolist()} should be {want[0].tolist()}: group j is "
                             "w[n, j*g:(j+1)*g] (reshape to [N, K // g, g], not [N, g, K // g])")


@check(points=3)
def codes_match_the_reference(impl):
    for bits, g, seed in ((4, 32, 1), (4, 16, 2), (8, 64, 3), (3, 32, 4), (2, 8, 6)):   # g = 64: one group per row
        w = _weights(seed=seed)
        q, scale, zero = _result(impl, w, bits, g)
        rq, rs, rz = _reference(w, bits, g)
        assert torch.allclose(scale, rs, rtol=1e-5), f"scales differ from (max - min) / (2**bits - 1) for {bits} bits, group {g}"
        if not torch.equal(zero, rz):
            rows = sorted({int(r) for r in (zero != rz).nonzero()[:, 0]})
            hint = (" Row 1 is all negative: there round(-min / scale) exceeds qmax, clamp it to [0, qmax]."
                    if rows == [1] else "")
            raise AssertionError(f"zero points differ from round(-min / scale) for {bits} bits, group {g} "
                                 f"(rows {rows}).{hint}")
        wrong = (q != rq).float().mean().item()
        assert wrong < 0.001, f"{wrong:.1%} of the codes differ from clamp(round(w / scale) + zero, 0, qmax) ({bits} bits, group {g})"


@check(points=2)
def dequantize_inverts(impl):
    w = _weights(seed=5)
    for g in (32, 16):
        rq, rs, rz = _reference(w, 4, g)
        back = impl.dequantize_groupwise(rq.to(torch.int32), rs.clone(), rz.clone(), g)  # q: any integer dtype
        assert isinstance(back, torch.Tensor) and tuple(back.shape) == tuple(w.shape), \
            f"dequantize_groupwise should return a tensor shaped like w {tuple(w.shape)}"
        assert back.dtype == torch.float32, f"dequantize_groupwise should return float32 weights, got {back.dtype}"
        want = ((rq.reshape(8, 64 // g, g) - rz[..., None]) * rs[..., None]).reshape(8, 64)
        err = (back - want).abs().max().item()
        assert err < 1e-5, f"dequantize_groupwise differs from (q - zero) * scale by {err:.3g} (group {g})"
        step = rs.repeat_interleave(g, 1)
        assert ((back - w).abs() <= step / 2 + 1e-5)[2:].all(), \
            "after a round trip every weight should be within half a step (scale / 2) of the original"  # rows 0, 1 clip


@check(points=1)
def inputs_are_not_modified(impl):
    w = _weights(seed=7)
    before = w.clone()
    q, scale, zero = impl.quantize_groupwise(w, 4, 32)
    assert torch.equal(w, before), ("quantize_groupwise changed the caller's weight: w.float() of a float32 tensor is "
                                    "the same tensor, so w.float() -= ... writes into w. Compute into new tensors")
    copies = [t.clone() for t in (q, scale, zero)]
    impl.dequantize_groupwise(q, scale, zero, 32)
    assert all(torch.equal(t, c) for t, c in zip((q, scale, zero), copies)), \
        "dequantize_groupwise changed q, scale or zero in place: the caller still needs them"


@check(points=1)
def constant_group_and_bad_group_size(impl):
    w = torch.zeros(2, 32)  # an all-zero group, as pruning leaves them
    q, scale, zero = _result(impl, w, 4, 16)
    back = impl.dequantize_groupwise(q, scale, zero, 16)
    assert torch.isfinite(back).all() and torch.equal(back.float(), w), \
        "an all-zero group (max == min) must come back as zeros, not NaN: clamp the scale to >= 1e-8"
    try:
        impl.quantize_groupwise(torch.randn(2, 48), 4, 32)
    except ValueError:
        return
    raise AssertionError("group_size 32 does not divide K = 48: raise ValueError")
