"""Checks for exercise 01b: sampling filters, against `labkit.models.sampling`."""
from __future__ import annotations

import math

import torch

from labkit.grading import check
from labkit.models import sampling


def _logits(*shape: int, seed: int, scale: float = 2.5) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


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
    x = _logits(3, 50, seed=0)
    for t in (0.5, 1.0, 1.7, 0.05):
        got = _as_tensor(impl.apply_temperature(x.clone(), t), x, "apply_temperature")
        if not torch.allclose(got, x / t, rtol=1e-6):
            hint = " Divide the logits by the temperature." if torch.allclose(got, x * t, rtol=1e-6) else ""
            raise AssertionError(f"apply_temperature(logits, {t}) is wrong.{hint}")


@check(points=2)
def top_k_keeps_k_largest(impl):
    x = _logits(4, 100, seed=1)
    for k in (1, 5, 37, 99):
        got = _as_tensor(impl.top_k_filter(x, k), x, "top_k_filter")
        want = sampling.top_k_filter(x, k)
        kept = _kept(got).sum(-1)
        assert _same(got, want), f"top_k_filter(k={k}) keeps {kept.tolist()} tokens per row (expected {k}, the largest, unchanged)"
    for k in (0, 100, 150):
        try:
            got = impl.top_k_filter(x, k)
        except RuntimeError as e:
            raise AssertionError(f"top_k_filter(k={k}) on 100 tokens raised {e!r}: k <= 0 or k >= V keeps every token "
                                 "(check that before calling torch.topk)") from None
        assert _same(got, x), f"top_k_filter(k={k}) on a vocabulary of 100 should keep every token"
    x3 = _logits(2, 3, 40, seed=2)   # [batch, rows, V]: filter along the last dimension
    assert _same(_as_tensor(impl.top_k_filter(x3, 4), x3, "top_k_filter"), sampling.top_k_filter(x3, 4)), \
        "top_k_filter on logits [2, 3, 40] should keep the 4 largest of each row of the last dimension"


def _nucleus_hint(n_got: torch.Tensor, n_want: torch.Tensor) -> str:
    if bool((n_got == n_want - 1).any()) and bool((n_got <= n_want).all()):
        return (" You drop the token that crosses p: keep a token while the mass of the tokens ranked "
                "above it is < p (exclusive cumulative sum).")
    if bool((n_got == n_want).all()):
        return (" The right number of tokens, but not the right ones or not in their original positions: "
                "scatter back in vocabulary order.")
    return ""


@check(points=4)
def top_p_keeps_the_nucleus(impl):
    # probabilities 0.5, 0.3, 0.2: p = 0.45 keeps 1 token, 0.6 keeps 2 (the one crossing p), 0.85 keeps 3
    fixed = torch.tensor([math.log(0.3), math.log(0.5), math.log(0.2)])
    for p, n in ((0.45, 1), (0.6, 2), (0.85, 3)):
        got = _as_tensor(impl.top_p_filter(fixed, p), fixed, "top_p_filter")
        assert _same(got, sampling.top_p_filter(fixed, p)), (
            f"probabilities [0.3, 0.5, 0.2] with p={p}: keep the {n} most likely token(s), got {got.tolist()}."
            + _nucleus_hint(_kept(got).sum(-1), torch.tensor(n)))
    # a tie with p: two tokens of probability exactly 0.5 (a row top-k already cut). The second has
    # 0.5 ranked above it, which is not < 0.5: it is dropped
    tied = torch.tensor([0.0, float("-inf"), 0.0])
    got = _as_tensor(impl.top_p_filter(tied, 0.5), tied, "top_p_filter")
    assert int(_kept(got).sum()) == 1 and bool(torch.isinf(got[1])), (
        f"probabilities [0.5, 0, 0.5] with p=0.5: keep 1 token (the second has exactly p ranked above it, "
        f"not less), got {got.tolist()}")
    for shape, seed in (((60,), 3), ((5, 200), 4), ((2, 3, 50), 5)):
        x = _logits(*shape, seed=seed)
        for p in (0.3, 0.75, 0.9):
            want = sampling.top_p_filter(x, p)
            got = _as_tensor(impl.top_p_filter(x, p), x, "top_p_filter")
            if _same(got, want):
                continue
            n_got, n_want = _kept(got).sum(-1), _kept(want).sum(-1)
            raise AssertionError(f"top_p_filter(p={p}) on logits {tuple(x.shape)} keeps {n_got.tolist()} tokens, "
                                 f"expected {n_want.tolist()}.{_nucleus_hint(n_got, n_want)}")


@check(points=1)
def top_p_edge_cases(impl):
    x = _logits(3, 40, seed=6)
    got = impl.top_p_filter(x, 1e-6)
    assert bool((_kept(got).sum(-1) == 1).all()) and bool((got.argmax(-1) == x.argmax(-1)).all()), \
        "with a tiny p, exactly the most likely token must survive"
    for p in (1.0, 1.5):
        assert _same(impl.top_p_filter(x, p), x), f"top_p_filter(p={p}) should keep every token"


@check(points=2)
def large_logits_stay_finite(impl):
    """Logits in the hundreds (or a low temperature) overflow exp() in float32: exp(89) is inf."""
    x = _logits(2, 80, seed=7, scale=80.0)
    want = sampling.top_p_filter(x, 0.9)
    got = _as_tensor(impl.top_p_filter(x, 0.9), x, "top_p_filter")
    if not _same(got, want):
        raise AssertionError("top_p_filter on logits of a few hundred keeps the wrong tokens: exp() of them is inf, "
                             "so probabilities computed as exp / sum are NaN. Use softmax (it subtracts the max first)")
    x = _logits(2, 80, seed=8)
    probs = _as_tensor(impl.sampling_probs(x, 0.01, 0, 0.9), x, "sampling_probs")
    want = sampling.top_p_filter(x / 0.01, 0.9).softmax(-1)
    assert torch.isfinite(probs).all() and torch.allclose(probs, want, atol=1e-5), (
        "sampling_probs at temperature 0.01 gives NaN or wrong probabilities: logits / 0.01 reach the hundreds; "
        "use a softmax that subtracts the row max (torch.softmax does)")


@check(points=3)
def sampling_probs_pipeline(impl):
    x = _logits(2, 300, seed=9)
    for t, k, p in ((0.7, 0, 0.9), (1.5, 20, 0.8), (1.0, 0, 1.0), (0.4, 50, 0.5), (0.05, 0, 1.0)):
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
        elif torch.allclose(got, sampling.top_p_filter(x / t, p).softmax(-1), atol=1e-5):
            hint = " top_k was ignored."
        elif torch.allclose(got, sampling.top_k_filter(x / t, k).softmax(-1), atol=1e-5):
            hint = " top_p was ignored."
        raise AssertionError(f"sampling_probs(temperature={t}, top_k={k}, top_p={p}) differs from the reference "
                             f"by {float((got - want).abs().max()):.3g}.{hint}")


@check(points=1)
def logits_are_not_modified(impl):
    x = _logits(2, 30, seed=10)
    for name, call in (("apply_temperature", lambda t: impl.apply_temperature(t, 0.5)),
                       ("top_k_filter", lambda t: impl.top_k_filter(t, 3)),
                       ("top_p_filter", lambda t: impl.top_p_filter(t, 0.5)),
                       ("sampling_probs", lambda t: impl.sampling_probs(t, 0.7, 5, 0.8))):
        mine = x.clone()
        call(mine)
        assert torch.equal(mine, x), (f"{name} changed the caller's logits (the engine reuses them, e.g. for "
                                      "logprobs): return a new tensor (masked_fill, not masked_fill_; x / t, not x /= t)")
