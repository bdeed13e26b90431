"""`workload.kernel_timeline`: kernels per decode step and the gaps between them, from the
(start, end) of each kernel, as the GPU profile of `labkit bench engine --mode profile` reports."""
import pytest

from labkit.engine.workload import HOST_GAP_US, kernel_timeline


def test_gaps_inside_steps_count_and_host_pauses_do_not():
    # two steps of three kernels: gaps 1.0 and -0.5 (overlapped) in the first, 2.0 and 0.5 in the
    # second; between the steps the host works for longer than any launch gap
    first = [(0.0, 10.0), (11.0, 20.0), (19.5, 30.0)]
    second = [(s + 30.0 + HOST_GAP_US + 70.0, e + 30.0 + HOST_GAP_US + 70.0) for s, e in
              [(0.0, 5.0), (7.0, 9.0), (9.5, 12.0)]]
    t = kernel_timeline(second + first, steps=2)   # any order
    assert t["kernels_per_step"] == 3
    assert t["gap_us_median"] == pytest.approx(0.75)
    assert t["gap_us_mean"] == pytest.approx((1.0 - 0.5 + 2.0 + 0.5) / 4)
    assert t["gap_us_per_step"] == pytest.approx(1.5)


def test_one_kernel_per_step_has_no_gap():
    t = kernel_timeline([(0.0, 1.0), (500.0, 501.0)], steps=2)
    assert t["kernels_per_step"] == 1 and t["gap_us_median"] is None and t["gap_us_per_step"] == 0
