"""Checks for exercise 03c: the generalized Jensen-Shannon divergence, against float64 definitions."""
from __future__ import annotations

import math

import torch

from labkit.grading import check
from labkit.grading.checks.ex03_kd_loss import close, kl64, log_softmax64, logits


def reference(s: torch.Tensor, t: torch.Tensor, beta: float, dim: int = -1) -> float:
    log_q, log_p = log_softmax64(s, dim=dim), log_softmax64(t, dim=dim)
    log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log(1 - beta))
    return (beta * kl64(log_p, log_m) + (1 - beta) * kl64(log_q, log_m)).mean().item()


def value(impl, s: torch.Tensor, t: torch.Tensor, beta: float) -> float:
    out = impl.generalized_jsd(s.clone(), t.clone(), beta)
    assert isinstance(out, torch.Tensor), f"return a tensor, not {type(out).__name__}"
    assert out.dim() == 0, f"return one number (the mean over positions), got shape {tuple(out.shape)}"
    return float(out)


@check(points=3)
def matches_the_definition(impl):
    for seed, beta in ((0, 0.5), (1, 0.1), (2, 0.8)):
        s, t = logits(seed), logits(seed + 10)
        got, want = value(impl, s, t, beta), reference(s, t, beta)
        if close(got, want):
            continue
        if close(got, reference(s, t, 1 - beta)):
            raise AssertionError(f"at beta = {beta} this is the value for beta = {1 - beta:g}: m = beta * p + "
                                 "(1 - beta) * q with p the teacher's, and KL(p || m) weighted by beta")
        raise AssertionError(f"at beta = {beta}: {got:.6f}, want {want:.6f}. Mix the probabilities, not the "
                             "log-probabilities: m = beta * p + (1 - beta) * q")


@check(points=2)
def bounded_and_symmetric_at_one_half(impl):
    s, t = logits(3, scale=8.0), logits(4, scale=8.0)
    a, b = value(impl, s, t, 0.5), value(impl, t, s, 0.5)
    assert close(a, b, 1e-4), f"at beta = 0.5 swapping student and teacher must not change the value ({a:.6f} vs {b:.6f})"
    assert 0 <= a <= math.log(2) + 1e-6, f"the JSD at beta = 0.5 lies in [0, ln 2], got {a:.6f}"


@check(points=2)
def softmax_over_the_vocabulary(impl):
    s, t = logits(5, (4, 3, 6)), logits(6, (4, 3, 6))
    got = value(impl, s, t, 0.3)
    for dim in (0, 1):
        if close(got, reference(s, t, 0.3, dim)):
            raise AssertionError(f"the softmax ran over axis {dim}: take it over the last axis (dim=-1), the vocabulary")
    assert close(got, reference(s, t, 0.3)), f"on [4, 3, 6] logits: {got:.6f}, want {reference(s, t, 0.3):.6f}"


@check(points=2)
def stable_for_large_logits(impl):
    s, t = logits(7, scale=300.0), logits(8, scale=300.0)
    got, want = value(impl, s, t, 0.5), reference(s, t, 0.5)
    assert math.isfinite(got), \
        f"logits of size 300 give {got}: probabilities underflow to 0 and log(0) = -inf (0 * -inf = nan). " \
        "Use log_softmax, and log m = torch.logaddexp(log p + log(beta), log q + log(1 - beta))"
    assert close(got, want, 1e-3), f"logits of size 300: {got:.6g}, want {want:.6g}"


@check(points=1)
def boundaries_errors_and_inputs_unchanged(impl):
    s = logits(9)
    assert abs(value(impl, s, s.clone(), 0.3)) < 1e-6, "identical distributions must give 0"
    v, u = logits(10, (7,)), logits(11, (7,))
    assert close(value(impl, v, u, 0.5), reference(v[None], u[None], 0.5)), "a single position [V] (1-D logits) should work"
    for beta in (0.0, 1.0):
        try:
            impl.generalized_jsd(s, s, beta)
        except ValueError:
            continue
        raise AssertionError(f"beta = {beta:g} is outside (0, 1): raise ValueError")
    s, t = logits(12), logits(13)
    s0, t0 = s.clone(), t.clone()
    impl.generalized_jsd(s, t, 0.5)
    assert torch.equal(s, s0) and torch.equal(t, t0), "generalized_jsd changed its inputs: compute into new tensors"
