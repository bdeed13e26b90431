"""Checks for exercise 01b: sampling filters, against `labkit.models.sampling`."""
from __future__ import annotations

import random

import torch

from labkit.grading import check
from labkit.models import sampling


def _logits(*shape: int) -> torch.Tensor:
    return torch.randn(*shape) * random.choice([1.0, 2.5, 4.0])


def _as_tensor(out, like: torch.Tensor, name: str) -> torch.Tensor:
    assert isinstance(out, torch.Tensor), f"{name} should return a torch.Tensor, got {type(out).__name__}"
    assert out.shape == like.shape, f"{name}: expected shape {tuple(like.shape)}, got {tuple(out.shape)}"
    return out


def _kept(x: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(x)


def _same(got: torch.Tensor, want: torch.Tensor) -> bool:
    keep = _kept(want)
    return bool((_kept(got) == keep).all()) and torch.allclose(got[keep].float(), want[keep].float(), atol=1e-5)


@check(points=2)
def temperature_scales_logits(impl):
    x = _logits(3, 50)
    for t in (0.5, 1.0, 1.7):
        got = _as_tensor(impl.apply_temperature(x, t), x, "apply_temperature")
        if not torch.allclose(got, x / t, atol=1e-6):
            hint = " Divide the logits by the temperature." if torch.allclose(got, x * t, atol=1e-6) else ""
            raise AssertionError(f"apply_temperature(logits, {t}) is wrong.{hint}")


@check(points=2)
def top_k_keeps_k_largest(impl):
    x = _logits(4, 100)
    for k in (1, 5, 37):
        got = _as_tensor(impl.top_k_filter(x, k), x, "top_k_filter")
        want = sampling.top_k_filter(x, k)
        kept = _kept(got).sum(-1)
        assert _same(got, want), f"top_k_filter(k={k}) keeps {kept.tolist()} tokens per row (expected {k}, the largest, unchanged)"
    assert _same(impl.top_k_filter(x, 0), x), "top_k_filter(k=0) should keep every token"


@check(points=4)
def top_p_keeps_the_nucleus(impl):
    for shape in ((60,), (5, 200)):
        x = _logits(*shape)
        for p in (0.3, 0.75, 0.9):
            want = sampling.top_p_filter(x, p)
            got = _as_tensor(impl.top_p_filter(x, p), x, "top_p_filter")
            if _same(got, want):
                continue
            n_got, n_want = _kept(got).sum(-1), _kept(want).sum(-1)
            hint = ""
            if bool((n_got == n_want - 1).any()) and bool((n_got <= n_want).all()):
                hint = (" You drop the token that crosses p: keep a token while the mass of the tokens ranked "
                        "above it is < p (exclusive cumulative sum).")
            elif bool((n_got == n_want).all()):
                hint = " The right number of tokens, but not the right ones or not in their original positions: scatter back in vocabulary order."
            raise AssertionError(f"top_p_filter(p={p}) on logits {tuple(x.shape)} keeps {n_got.tolist()} tokens, "
                                 f"expected {n_want.tolist()}.{hint}")


@check(points=1)
def top_p_edge_cases(impl):
    x = _logits(3, 40)
    got = impl.top_p_filter(x, 1e-6)
    assert bool((_kept(got).sum(-1) == 1).all()) and bool((got.argmax(-1) == x.argmax(-1)).all()), \
        "with a tiny p, exactly the most likely token must survive"
    assert _same(impl.top_p_filter(x, 1.0), x), "top_p_filter(p=1.0) should keep every token"


@check(points=3)
def sampling_probs_pipeline(impl):
    x = _logits(2, 300)
    for t, k, p in ((0.7, 0, 0.9), (1.5, 20, 0.8), (1.0, 0, 1.0), (0.4, 50, 0.5)):
        want = sampling.top_p_filter(sampling.top_k_filter(x / t, k), p).softmax(-1)
        got = _as_tensor(impl.sampling_probs(x, t, k, p), x, "sampling_probs")
        assert torch.allclose(got.sum(-1), torch.ones(2), atol=1e-4), "each row of probabilities should sum to 1"
        if torch.allclose(got, want, atol=1e-5):
            continue
        hint = ""
        no_temp = sampling.top_p_filter(sampling.top_k_filter(x, k), p).softmax(-1)
        late_temp = (sampling.top_p_filter(sampling.top_k_filter(x, k), p) / t).softmax(-1)
        if torch.allclose(got, no_temp, atol=1e-5):
            hint = " The temperature is missing."
        elif torch.allclose(got, late_temp, atol=1e-5):
            hint = " Apply the temperature first: top-p must see the tempered distribution."
        raise AssertionError(f"sampling_probs(temperature={t}, top_k={k}, top_p={p}) differs from the reference "
                             f"by {float((got - want).abs().max()):.3g}.{hint}")
