"""Device table, roofline model, timers."""
import time

import pytest

from labkit.profile import cost, hardware, roofline
from labkit.profile.configs import PRESETS
from labkit.profile.timing import Timer, measure, measure_all

H100 = hardware.GPUS["H100 SXM"]


def test_spec_table_has_the_usual_gpus():
    for name in ("H100 SXM", "H100 PCIe", "H200", "A100 40GB", "A100 80GB", "L4", "RTX 4090", "T4"):
        d = hardware.GPUS[name]
        assert d.memory_gb > 0 and d.bandwidth_gbs > 0 and d.tflops > 0
    assert H100.ridge == pytest.approx(989e12 / 3.35e12)
    assert hardware.GPUS["H200"].memory_gb > H100.memory_gb
    assert "| H100 SXM | 80 | 3350 | 989 | 295 |" in hardware.spec_table()
    with pytest.raises(KeyError, match="unknown device"):
        hardware.get_device("TPU v9")


def test_measured_device_is_plausible():
    d = hardware.measure_device("cpu")
    assert d.name.startswith("this CPU")
    assert 0.5 < d.bandwidth_gbs < 5000
    assert 1e-4 < d.tflops < 1000
    # measured once per process: both names of this machine return that first measurement
    assert hardware.get_device(hardware.THIS_MACHINE) is d
    assert hardware.get_device("this") is d


def test_attainable_is_the_lower_roof():
    assert roofline.attainable_flops(1.0, H100) == H100.bytes_per_s
    assert roofline.attainable_flops(1e5, H100) == H100.flops_per_s
    r = roofline.ridge_point(H100)
    assert roofline.attainable_flops(r, H100) == pytest.approx(H100.flops_per_s)
    assert roofline.lower_bound_seconds(1e12, 1e9, H100) == pytest.approx(max(1e12 / 989e12, 1e9 / 3.35e12))


def test_decode_batch1_is_memory_bound_and_time_is_bytes_over_bandwidth():
    c = PRESETS["Llama-2-7B"]
    p = roofline.decode_point(c, H100, 1, 1024)
    assert p.bound == "memory"
    assert p.seconds == pytest.approx(cost.decode_bytes(c, 1, 1024) / H100.bytes_per_s)
    # ~14 GB per token at 3.35 TB/s: about 4 ms, ~240 tokens/s at most
    assert 3e-3 < p.seconds < 5e-3
    assert p.tokens_per_s == pytest.approx(1 / p.seconds)


def test_critical_batch():
    c = PRESETS["Llama-3-8B"]
    b = roofline.critical_batch(c, H100, 128)
    assert b is not None
    assert cost.arithmetic_intensity(c, b, 128) >= H100.ridge > cost.arithmetic_intensity(c, b - 1, 128)
    # Llama-2-7B (no GQA) at long context: the KV cache keeps decode memory-bound at any batch
    assert roofline.critical_batch(PRESETS["Llama-2-7B"], H100, 4096) is None
    sweep = roofline.decode_sweep(c, H100, [1, 8, 64, 512], 128)
    assert [p.bound for p in sweep][:2] == ["memory", "memory"]
    assert sweep[-1].bound == "compute"
    assert all(a.tokens_per_s < b.tokens_per_s for a, b in zip(sweep, sweep[1:]))


def test_timer_and_measure():
    with Timer() as t:
        time.sleep(0.01)
    assert 0.009 < t.seconds < 0.5
    calls = []
    seconds = measure(lambda: calls.append(time.sleep(0.002)), repeats=5, warmup=2)
    assert len(calls) == 7
    assert 0.0015 < seconds < 0.2
    assert len(measure_all(lambda: None, repeats=3, warmup=0)) == 3
