"""Wall-clock timers that tell the truth about asynchronous GPUs.

CUDA kernels are launched asynchronously: without a `synchronize` a timer measures how fast
Python can *queue* work, not how fast the GPU does it. Both helpers synchronize when CUDA is
in use. `measure` reports the median of several runs after a warm-up, because the first
call pays for allocation, kernel selection and caches, and a single run is at the mercy of
whatever else the machine is doing (the median ignores the outliers a mean would absorb).
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable

from labkit.kernels.measure import synchronize


class Timer:
    """`with Timer() as t: ...` then `t.seconds` (synchronizing a GPU at both ends).

    >>> with Timer() as t:
    ...     _ = sum(range(1000))
    >>> t.seconds >= 0
    True
    """

    def __init__(self, sync: bool = True):
        self.sync = sync
        self.seconds = float("nan")

    def __enter__(self) -> "Timer":
        if self.sync:
            synchronize()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.sync:
            synchronize()
        self.seconds = time.perf_counter() - self._start


def measure_all(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> list[float]:
    """Seconds of each of `repeats` calls of `fn`, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        with Timer() as t:
            fn()
        times.append(t.seconds)
    return times


def measure(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> float:
    """Median seconds of one call of `fn` (see the module docstring for why the median)."""
    return statistics.median(measure_all(fn, repeats, warmup))
