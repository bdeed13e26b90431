"""Checks for exercise 03a (the KD loss with T^2); the helpers serve 03b (reverse KL) too.

References are computed here in float64 from the definitions. A wrong answer is compared
with the usual mistakes (the other KL direction, no T^2, the softmax over another axis) so
that the message names the one made.
"""
from __future__ import annotations

from typing import Callable

import torch

from labkit.grading import check

Reference = Callable[..., float]   # (student, teacher, T[, softmax axis]) -> the loss


def logits(seed: int, shape=(2, 5, 11), scale: float = 3.0) -> torch.Tensor:
    return scale * torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def log_softmax64(x: torch.Tensor, temperature: float = 1.0, dim: int = -1) -> torch.Tensor:
    return torch.log_softmax(x.double() / temperature, dim=dim)


def kl64(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """KL(a || b) per position, summed over the last axis."""
    return (log_a.exp() * (log_a - log_b)).sum(-1)


def forward(s, t, T, dim=-1) -> float:
    """T^2 KL(teacher || student); with `dim`, the softmax taken over that axis instead (a mistake)."""
    return T**2 * kl64(log_softmax64(t, T, dim), log_softmax64(s, T, dim)).mean().item()


def backward(s, t, T, dim=-1) -> float:
    """T^2 KL(student || teacher)."""
    return forward(t, s, T, dim)


def value(fn, s: torch.Tensor, t: torch.Tensor, T: float) -> float:
    out = fn(s.clone(), t.clone(), T)
    assert isinstance(out, torch.Tensor), f"return a tensor, not {type(out).__name__}"
    assert out.dim() == 0, f"return one number (the mean over positions), got shape {tuple(out.shape)}"
    return float(out)


def close(a: float, b: float, rel: float = 1e-4) -> bool:
    return abs(a - b) <= rel * max(abs(b), 1e-6)


def divergence_checks(name: str, reference: Reference, other: Reference, other_hint: str):
    """The graded checks of a temperature-scaled KL exercise (03a forward, 03b reverse)."""

    @check(points=3)
    def matches_the_definition(impl):
        fn = getattr(impl, name)
        for seed, T in ((0, 1.0), (1, 2.0), (2, 0.5)):
            s, t = logits(seed), logits(seed + 10)
            got, want = value(fn, s, t, T), reference(s, t, T)
            if close(got, want):
                continue
            if close(got, other(s, t, T)):
                raise AssertionError(other_hint)
            if close(got, want / T**2) and T != 1:
                continue   # no T^2: the next check says so
            raise AssertionError(f"{name} gives {got:.6f} at T = {T}, the definition {want:.6f}: take log-probabilities "
                                 "with log_softmax, probabilities as their exp(), and sum p * (log p - log q) over "
                                 "the vocabulary")

    @check(points=2)
    def t_squared_factor(impl):
        fn = getattr(impl, name)
        s, t = logits(3), logits(4)
        for T in (2.0, 4.0):
            got, want = value(fn, s, t, T), reference(s, t, T)
            if close(got, want / T**2):
                raise AssertionError(f"at T = {T} the loss is {T**2:g}x too small: multiply by T**2 (the softened "
                                     "gradients shrink as 1/T^2; the factor keeps them the size of the hard loss's)")
            assert close(got, want), f"at T = {T}: {got:.6f}, want {want:.6f} (T^2 times the KL of the softened distributions)"

    @check(points=2)
    def softmax_over_the_vocabulary(impl):
        fn = getattr(impl, name)
        s, t = logits(5, (4, 3, 6)), logits(6, (4, 3, 6))
        got, want = value(fn, s, t, 1.0), reference(s, t, 1.0)
        for dim in (0, 1):
            if close(got, reference(s, t, 1.0, dim)):
                raise AssertionError(f"the softmax ran over axis {dim}: take it over the last axis (dim=-1), the "
                                     "vocabulary; every other axis is a position")
        assert close(got, want), f"on [4, 3, 6] logits: {got:.6f}, want {want:.6f}"

    @check(points=2)
    def stable_for_large_logits_and_low_temperature(impl):
        fn = getattr(impl, name)
        for scale, T in ((400.0, 1.0), (20.0, 0.05)):
            s, t = logits(7, scale=scale), logits(8, scale=scale)
            got, want = value(fn, s, t, T), reference(s, t, T)
            assert torch.isfinite(torch.tensor(got)), \
                f"logits of size {scale:g} at T = {T} give {got}: exp() overflowed. Use torch.log_softmax " \
                "(it subtracts the max first) instead of log(softmax) or exp / sum"
            assert close(got, want, 1e-3), f"logits of size {scale:g} at T = {T}: {got:.6g}, want {want:.6g}"

    @check(points=1)
    def boundaries_and_inputs_unchanged(impl):
        fn = getattr(impl, name)
        s = logits(9)
        assert abs(value(fn, s, s.clone(), 2.0)) < 1e-5, "identical distributions must give 0"
        one = logits(10, (1, 1, 1))
        assert abs(value(fn, one, one * 3, 1.0)) < 1e-6, "a vocabulary of one token: both put all mass on it, give 0"
        v, u = logits(11, (7,)), logits(12, (7,))
        assert close(value(fn, v, u, 1.5), reference(v[None], u[None], 1.5)), \
            "a single position [V] (1-D logits) should work: the mean over one position"
        s, t = logits(13), logits(14)
        s0, t0 = s.clone(), t.clone()
        fn(s, t, 2.0)
        assert torch.equal(s, s0) and torch.equal(t, t0), f"{name} changed its inputs: divide into new tensors, not in place"

    return (matches_the_definition, t_squared_factor, softmax_over_the_vocabulary,
            stable_for_large_logits_and_low_temperature, boundaries_and_inputs_unchanged)


(matches_the_definition, t_squared_factor, softmax_over_the_vocabulary,
 stable_for_large_logits_and_low_temperature, boundaries_and_inputs_unchanged) = divergence_checks(
    "kd_loss", forward, backward,
    "this is KL(student || teacher), the reverse direction: the KD loss weighs by the teacher, "
    "sum p * (log p - log q) with p = softmax(teacher / T)")
