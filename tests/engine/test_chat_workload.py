"""`labkit.engine.workload.chat_workload`: the one chat-shaped workload (bench engine, notebooks
06 and 08, the scheduler simulator)."""
import math

import numpy as np

from labkit.engine.workload import chat_workload


def lengths(reqs) -> np.ndarray:
    return np.array([[len(r.prompt), r.output_len] for r in reqs])


def test_lengths_are_log_normal_around_the_scaled_medians_and_clipped():
    reqs = chat_workload(2000, rate=4.0, scale=0.25, vocab=500, seed=0)
    lens = lengths(reqs)
    assert lens.min() >= 4 and lens.max() <= 1024 * 0.25
    # medians 130 and 150 at scale 1 (int() rounds down: a little below the scaled median)
    assert 0.85 * 130 * 0.25 < np.median(lens[:, 0]) < 1.05 * 130 * 0.25
    assert 0.85 * 150 * 0.25 < np.median(lens[:, 1]) < 1.05 * 150 * 0.25
    assert all(0 <= t < 500 for r in reqs[:50] for t in r.prompt)
    arrivals = np.array([r.arrival for r in reqs])
    assert np.all(np.diff(arrivals) >= 0)
    assert abs(len(reqs) / arrivals[-1] - 4.0) < 0.4          # Poisson arrivals at `rate` per second


def test_spread_scales_the_tails_and_one_keeps_the_draws():
    base = lengths(chat_workload(300, 1.0, 0.5, 1000, seed=3))
    assert np.array_equal(base, lengths(chat_workload(300, 1.0, 0.5, 1000, seed=3, spread=1.0)))
    narrow = lengths(chat_workload(300, 1.0, 0.5, 1000, seed=3, spread=0.2))
    log_sd = lambda x: np.log(x[:, 0]).std()
    assert log_sd(narrow) < 0.5 * log_sd(base)


def test_infinite_rate_puts_every_arrival_at_zero():
    reqs = chat_workload(8, math.inf, 0.12, 100, seed=1)
    assert [r.arrival for r in reqs] == [0.0] * 8


def test_prompts_are_cut_from_the_given_text():
    text = list(range(1000, 3000))
    for r in chat_workload(20, 2.0, 0.12, 5000, seed=2, text_ids=text):
        first = r.prompt[0]
        assert r.prompt == text[first - 1000:first - 1000 + len(r.prompt)]
