"""Bursty requests: arrival processes and a queue in front of a server of fixed capacity.

Users do not arrive evenly. Even a Poisson process (independent arrivals at a constant mean
rate) piles requests up now and then, and real traffic is burstier still: a product launch,
a batch job, a time zone waking up. A server sized for the *mean* rate then builds a queue
during every burst, and the queueing delay, not the compute, dominates what users feel.
The simulation is deliberately small: requests wait in one FIFO queue for the first of
`slots` identical workers (a batch slot of an inference server), each busy for the
request's service time.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np


def poisson_arrivals(rate: float, duration: float, seed: int = 0) -> np.ndarray:
    """Arrival times (seconds, sorted) of a Poisson process of `rate` requests/s over `duration` s:
    independent exponential gaps with mean 1 / rate."""
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / rate, size=int(rate * duration * 1.5) + 20)
    times = np.cumsum(gaps)
    while times[-1] < duration:  # rare: draw more
        times = np.concatenate([times, times[-1] + np.cumsum(rng.exponential(1.0 / rate, size=len(times)))])
    return times[times < duration]


def bursty_arrivals(rate: float, duration: float, burst_factor: float = 6.0, burst_share: float = 0.1,
                    burst_seconds: float = 5.0, seed: int = 0) -> np.ndarray:
    """Arrivals with the same mean `rate` as `poisson_arrivals`, but in bursts.

    A two-state Markov-modulated Poisson process: calm periods alternate with bursts in
    which requests arrive `burst_factor` times faster. Bursts take `burst_share` of the
    time and last `burst_seconds` on average; the calm rate is lowered so that the overall
    mean stays `rate`.
    """
    rng = np.random.default_rng(seed)
    calm_rate = rate / (1 - burst_share + burst_share * burst_factor)
    calm_seconds = burst_seconds * (1 - burst_share) / burst_share
    t, bursting, out = 0.0, False, []
    while t < duration:
        length = rng.exponential(burst_seconds if bursting else calm_seconds)
        r = calm_rate * (burst_factor if bursting else 1.0)
        n = rng.poisson(r * length)
        out.append(t + np.sort(rng.uniform(0, length, size=n)))
        t += length
        bursting = not bursting
    times = np.concatenate(out) if out else np.empty(0)
    return times[times < duration]


@dataclass
class QueueResult:
    """Per-request times of a simulated queue (seconds)."""

    arrival: np.ndarray
    start: np.ndarray
    finish: np.ndarray
    capacity: float          # requests/s the server can sustain

    @property
    def wait(self) -> np.ndarray:
        """Time spent queued before a slot picked the request up."""
        return self.start - self.arrival

    @property
    def latency(self) -> np.ndarray:
        return self.finish - self.arrival

    def load(self, duration: float | None = None) -> float:
        """Offered load: arrival rate / capacity (above 1 the queue grows without bound)."""
        duration = duration or float(self.arrival.max(initial=0.0)) or 1.0
        return len(self.arrival) / duration / self.capacity

    def summary(self) -> dict[str, float]:
        w = self.wait
        return {"requests": len(w), "mean_wait_s": float(w.mean()) if len(w) else 0.0,
                "p50_wait_s": float(np.percentile(w, 50)) if len(w) else 0.0,
                "p99_wait_s": float(np.percentile(w, 99)) if len(w) else 0.0,
                "max_wait_s": float(w.max(initial=0.0))}


def simulate_queue(arrivals: np.ndarray, service_seconds: float | np.ndarray, slots: int = 1) -> QueueResult:
    """First-come first-served queue with `slots` parallel workers.

    `service_seconds` is one number (every request costs the same) or one per request.
    The capacity is `slots / mean service time` requests per second.
    """
    arrivals = np.asarray(arrivals, dtype=float)
    service = np.broadcast_to(np.asarray(service_seconds, dtype=float), arrivals.shape)
    free_at = [0.0] * slots  # when each slot becomes free (a min-heap)
    start, finish = np.empty_like(arrivals), np.empty_like(arrivals)
    for i, (t, s) in enumerate(zip(arrivals, service)):
        slot_free = heapq.heappop(free_at)
        start[i] = max(t, slot_free)
        finish[i] = start[i] + s
        heapq.heappush(free_at, finish[i])
    mean_service = float(service.mean()) if len(service) else 1.0
    return QueueResult(arrivals, start, finish, capacity=slots / mean_service)


def rolling_rate(arrivals: np.ndarray, duration: float, window: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(window start times, requests/s in each window): what a traffic dashboard would plot."""
    edges = np.arange(0.0, duration + window, window)
    counts, _ = np.histogram(arrivals, bins=edges)
    return edges[:-1], counts / window
