"""Distillation losses against plain float64 formulas written from the definitions."""
import math

import pytest
import torch
import torch.nn.functional as F

from labkit.distill.losses import (HiddenMatcher, HiddenStates, cross_entropy, distill_loss, forward_kl,
                                   generalized_jsd, layer_map, reverse_kl)


def _logits(seed: int, shape=(2, 5, 11), scale: float = 3.0) -> torch.Tensor:
    return scale * torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _kl64(p_logits, q_logits, T):
    p = torch.softmax(p_logits.double() / T, -1)
    q = torch.softmax(q_logits.double() / T, -1)
    return (p * (p / q).log()).sum(-1).mean()


@pytest.mark.parametrize("T", [0.5, 1.0, 2.0, 4.0])
def test_forward_and_reverse_kl_match_the_definitions_with_t_squared(T):
    s, t = _logits(0), _logits(1)
    assert forward_kl(s, t, T).item() == pytest.approx(T**2 * _kl64(t, s, T).item(), rel=1e-5)
    assert reverse_kl(s, t, T).item() == pytest.approx(T**2 * _kl64(s, t, T).item(), rel=1e-5)
    assert forward_kl(s, t, T).item() != pytest.approx(reverse_kl(s, t, T).item(), rel=1e-3)  # KL is not symmetric


def test_t_squared_keeps_the_gradient_size_across_temperatures():
    """Hinton's reason for T^2: d KL / d logits shrinks as 1/T^2 for large T, the factor undoes it."""
    s, t = _logits(2, scale=0.5).requires_grad_(), _logits(3, scale=0.5)
    norms = []
    for T in (8.0, 16.0):
        (g,) = torch.autograd.grad(forward_kl(s, t, T), s)
        norms.append(g.norm().item())
    assert norms[0] == pytest.approx(norms[1], rel=0.02)


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
def test_generalized_jsd_matches_the_definition(beta):
    s, t = _logits(4), _logits(5)
    p, q = torch.softmax(t.double(), -1), torch.softmax(s.double(), -1)
    m = beta * p + (1 - beta) * q
    want = (beta * (p * (p / m).log()).sum(-1) + (1 - beta) * (q * (q / m).log()).sum(-1)).mean()
    assert generalized_jsd(s, t, beta).item() == pytest.approx(want.item(), rel=1e-5)


def test_generalized_jsd_is_bounded_symmetric_at_half_and_limits_to_the_kls():
    s, t = _logits(6, scale=30), _logits(7, scale=30)
    jsd = generalized_jsd(s, t, 0.5).item()
    assert 0 < jsd <= math.log(2) + 1e-6
    assert jsd == pytest.approx(generalized_jsd(t, s, 0.5).item(), rel=1e-5)
    small = _logits(8, scale=0.3)
    # beta -> 0: ~ beta * KL(teacher || student); beta -> 1: ~ (1 - beta) * KL(student || teacher)
    assert generalized_jsd(small, t * 0.1, 1e-3).item() / 1e-3 == pytest.approx(forward_kl(small, t * 0.1).item(), rel=0.02)
    assert generalized_jsd(small, t * 0.1, 1 - 1e-4).item() / 1e-4 == pytest.approx(reverse_kl(small, t * 0.1).item(), rel=0.02)
    with pytest.raises(ValueError, match="beta"):
        generalized_jsd(s, t, 1.0)


def test_cross_entropy_and_identical_distributions():
    s, labels = _logits(9), torch.randint(0, 11, (2, 5), generator=torch.Generator().manual_seed(0))
    assert cross_entropy(s, labels).item() == pytest.approx(F.cross_entropy(s.reshape(-1, 11), labels.reshape(-1)).item(), rel=1e-6)
    for fn in (forward_kl, reverse_kl, generalized_jsd):
        assert abs(fn(s, s.clone()).item()) < 1e-6


def test_large_logits_and_low_temperature_stay_finite():
    s, t = _logits(10, scale=1e4), _logits(11, scale=1e4)
    for value in (forward_kl(s, t, 0.1), reverse_kl(s, t, 0.1), generalized_jsd(s, t, 0.5, 0.1)):
        assert torch.isfinite(value) and value > 0


def test_mask_ignores_positions_and_distill_loss_mixes_alpha():
    s, t = _logits(12), _logits(13)
    labels = t.argmax(-1)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[:, :2] = True
    assert forward_kl(s, t, mask=mask).item() == pytest.approx(forward_kl(s[:, :2], t[:, :2]).item(), rel=1e-6)
    soft, hard = forward_kl(s, t, 2.0), cross_entropy(s, labels)
    mixed = distill_loss("fkl", s, t, labels, temperature=2.0, alpha=0.3)
    assert mixed.item() == pytest.approx((0.7 * soft + 0.3 * hard).item(), rel=1e-6)
    assert distill_loss("ce", s, None, labels).item() == pytest.approx(hard.item())
    assert distill_loss("rkl", s, t, labels).item() == pytest.approx(reverse_kl(s, t).item())
    with pytest.raises(ValueError, match="unknown loss"):
        distill_loss("kl", s, t, labels)


def test_layer_map_is_monotone_and_ends_at_the_last_layer():
    pairs = layer_map(6, 8)
    assert pairs[-1] == (5, 7) and [i for i, _ in pairs] == list(range(6))
    assert all(a < b for (_, a), (_, b) in zip(pairs, pairs[1:]))
    assert layer_map(4, 4) == [(0, 0), (1, 1), (2, 2), (3, 3)]


def test_hidden_matcher_projects_widths_and_learns():
    torch.manual_seed(0)
    t = {1: torch.randn(2, 3, 8)}
    same = HiddenMatcher(8, 8, [(0, 1)])
    assert same({0: t[1] * 5 + 1}, t).item() < 1e-8   # normalized: scale and shift do not count
    m = HiddenMatcher(4, 8, [(0, 1)])
    s = {0: torch.randn(2, 3, 4)}
    opt = torch.optim.Adam(m.parameters(), lr=0.05)
    first = m(s, t).item()
    for _ in range(100):
        opt.zero_grad()
        loss = m(s, t)
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_hidden_states_hook_keeps_layer_outputs():
    from .conftest import tiny_model

    model = tiny_model()
    hs = HiddenStates(model, [0, 1])
    model(torch.tensor([[1, 2, 3]]))
    assert set(hs.states) == {0, 1} and hs.states[1].shape == (1, 3, 64)
    hs.remove()
    hs.states.clear()
    model(torch.tensor([[1, 2, 3]]))
    assert hs.states == {}
