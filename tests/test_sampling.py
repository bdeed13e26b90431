"""Sampling filters and their parameters."""
import pytest
import torch

from labkit.models.sampling import (SamplingParams, apply_repetition_penalty, sample_next, sample_rows, top_k_filter,
                                    top_p_filter)


def test_top_k_keeps_exactly_k():
    logits = torch.tensor([1.0, 5.0, 3.0, 2.0, 4.0])
    kept = top_k_filter(logits, 2).isfinite()
    assert kept.tolist() == [False, True, False, False, True]


@pytest.mark.parametrize("p, expected", [(0.8, 2), (0.81, 3), (0.5, 1), (0.3, 1), (1.0, 4)])
def test_top_p_keeps_the_smallest_nucleus(p, expected):
    probs = torch.tensor([0.15, 0.5, 0.05, 0.3])
    kept = top_p_filter(probs.log(), p).isfinite()
    assert int(kept.sum()) == expected
    assert kept[1]  # the most likely token always survives


def test_repetition_penalty_pushes_seen_tokens_down():
    logits = torch.tensor([2.0, -2.0, 1.0])
    out = apply_repetition_penalty(logits, torch.tensor([0, 1]), 2.0)
    assert out.tolist() == [1.0, -4.0, 1.0]


def test_greedy_is_argmax_and_seed_is_reproducible():
    logits = torch.randn(1000)
    assert sample_next(logits, SamplingParams(temperature=0)) == int(logits.argmax())
    params = SamplingParams(temperature=1.0, seed=7)
    a = [sample_next(logits, params, generator=g) for g in [params.generator()] for _ in range(20)]
    b = [sample_next(logits, params, generator=g) for g in [params.generator()] for _ in range(20)]
    assert a == b and len(set(a)) > 1


def test_samples_follow_the_distribution_and_never_pick_a_filtered_token():
    """Frequencies of 20,000 seeded draws within 5 standard deviations of the probabilities;
    the token top-k removed is the last one, where a cumulative sum ends."""
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0])
    logits = torch.log(probs + torch.tensor([0, 0, 0, 0, 1e-3]))
    params = SamplingParams(temperature=1.0, top_k=4, seed=11)
    g, n = params.generator(), 20_000
    counts = torch.bincount(torch.tensor([sample_next(logits, params, generator=g) for _ in range(n)]), minlength=5)
    expected = torch.softmax(top_k_filter(logits, 4), -1)
    sigma = (expected * (1 - expected) / n).sqrt()
    assert counts[4] == 0
    assert ((counts / n - expected).abs() <= 5 * sigma + 1e-9).all(), (counts / n, expected)


def test_low_temperature_concentrates_mass():
    logits = torch.tensor([1.0, 1.5, 0.5])
    params = SamplingParams(temperature=0.05, seed=0)
    g = params.generator()
    assert {sample_next(logits, params, generator=g) for _ in range(50)} == {1}


@pytest.mark.parametrize("kwargs", [dict(temperature=-1), dict(top_p=0), dict(top_p=1.5), dict(top_k=-1),
                                    dict(max_tokens=0), dict(repetition_penalty=0)])
def test_invalid_params_are_refused(kwargs):
    with pytest.raises(ValueError):
        SamplingParams(**kwargs)


def test_per_row_filters_match_the_one_row_filters():
    logits = torch.randn(4, 50)
    k, p = [0, 1, 7, 50], [1.0, 0.3, 0.9, 0.999]
    by_row = torch.stack([top_k_filter(logits[i], k[i]) for i in range(4)])
    assert torch.equal(top_k_filter(logits, torch.tensor(k)[:, None]), by_row)
    by_row = torch.stack([top_p_filter(logits[i], p[i]) for i in range(4)])
    assert torch.equal(top_p_filter(logits, torch.tensor(p)[:, None]), by_row)


def test_a_batch_samples_each_row_as_if_alone():
    """Rows with different parameters in one call: each row's tokens are the ones its own seed
    gives it alone, draw after draw (a seeded request does not depend on its neighbours)."""
    logits = torch.randn(5, 300) * 3
    params = [SamplingParams(temperature=0), SamplingParams(temperature=0.7, top_p=0.9, seed=1),
              SamplingParams(temperature=1.0, top_k=5, seed=2), SamplingParams(temperature=1.3, seed=3),
              SamplingParams(temperature=0.8, top_k=20, top_p=0.5, repetition_penalty=1.3, seed=4)]
    seen = [None, None, None, None, torch.tensor([int(logits[4].argmax()), 3, 9])]
    batch_gens = [q.generator() for q in params]
    alone_gens = [q.generator() for q in params]
    batch = [sample_rows(logits, params, seen, batch_gens) for _ in range(30)]
    alone = [[sample_next(logits[i], params[i], seen[i], alone_gens[i]) for i in range(5)] for _ in range(30)]
    assert batch == alone
    assert {b[0] for b in batch} == {int(logits[0].argmax())}                       # greedy
    assert {b[2] for b in batch} <= set(torch.topk(logits[2], 5).indices.tolist())  # top-k 5
    assert len({b[3] for b in batch}) > 5                                           # sampled
