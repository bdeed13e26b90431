"""Arrival processes and the queue simulation."""
import numpy as np
import pytest

from labkit.profile.traffic import bursty_arrivals, poisson_arrivals, rolling_rate, simulate_queue


def test_poisson_rate_and_order():
    a = poisson_arrivals(rate=20, duration=500, seed=1)
    assert np.all(np.diff(a) >= 0) and a.min() >= 0 and a.max() < 500
    assert len(a) / 500 == pytest.approx(20, rel=0.05)
    assert np.array_equal(a, poisson_arrivals(20, 500, seed=1))


def test_bursty_has_the_same_mean_but_more_variance():
    p = poisson_arrivals(10, 3000, seed=2)
    b = bursty_arrivals(10, 3000, seed=2)
    assert len(b) / 3000 == pytest.approx(10, rel=0.15)
    _, rp = rolling_rate(p, 3000)
    _, rb = rolling_rate(b, 3000)
    assert rb.var() > 3 * rp.var()


def test_queue_by_hand():
    r = simulate_queue(np.array([0.0, 0.0, 0.0, 5.0]), 1.0, slots=1)
    assert r.start.tolist() == [0.0, 1.0, 2.0, 5.0]
    assert r.wait.tolist() == [0.0, 1.0, 2.0, 0.0]
    assert r.latency.tolist() == [1.0, 2.0, 3.0, 1.0]
    r2 = simulate_queue(np.array([0.0, 0.0, 0.0]), 1.0, slots=2)
    assert r2.wait.tolist() == [0.0, 0.0, 1.0]
    assert r2.capacity == 2.0


def test_bursts_make_waits_longer_at_the_same_load():
    rate, service = 5.0, 0.15   # load 0.75
    calm = simulate_queue(poisson_arrivals(rate, 600, seed=3), service)
    burst = simulate_queue(bursty_arrivals(rate, 600, seed=3), service)
    assert calm.load(600) == pytest.approx(0.75, rel=0.1)
    assert burst.summary()["p99_wait_s"] > 5 * calm.summary()["p99_wait_s"]
    assert set(calm.summary()) == {"requests", "mean_wait_s", "p50_wait_s", "p99_wait_s", "max_wait_s"}
