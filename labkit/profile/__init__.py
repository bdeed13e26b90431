"""Profiling: timers, cost formulas, device specs, the roofline model and two dashboards.

- `cost`: FLOPs, bytes and memory of any Llama-family config (no weights needed);
- `configs`: presets (the embedded model, Llama-2/3, Qwen2, Mistral);
- `hardware`: a GPU spec table and this machine, measured;
- `roofline`: attainable FLOP/s, decode steps placed on a roofline;
- `timing`: `Timer` and `measure` (median seconds, GPU-synchronized);
- `speed`: measured prefill / decode tokens per second of a model;
- `traffic`: bursty arrivals and a queue in front of a server;
- `plots`, `widgets`: figures and the ipywidgets memory planner and roofline explorer
  (imported on use: they need matplotlib / ipywidgets).
"""
from labkit.profile.configs import PRESETS, preset
from labkit.profile.cost import (
    KV_FORMATS, WEIGHT_FORMATS, MemoryPlan, activation_bytes, arithmetic_intensity, decode_bytes, decode_flops,
    flops_per_token, group_bits, kv_bytes_per_token, kv_cache_bytes, matmul_params, max_batch, memory_plan,
    param_bytes, param_count, prefill_bytes, prefill_flops)
from labkit.profile.hardware import GPUS, THIS_MACHINE, Device, get_device, measure_device
from labkit.profile.roofline import attainable_flops, critical_batch, decode_point, ridge_point
from labkit.profile.timing import Timer, measure

__all__ = [
    "PRESETS", "preset", "KV_FORMATS", "WEIGHT_FORMATS", "MemoryPlan", "activation_bytes", "arithmetic_intensity",
    "decode_bytes", "decode_flops", "flops_per_token", "group_bits", "kv_bytes_per_token", "kv_cache_bytes",
    "matmul_params", "max_batch", "memory_plan", "param_bytes", "param_count", "prefill_bytes", "prefill_flops", "GPUS",
    "THIS_MACHINE", "Device", "get_device", "measure_device", "attainable_flops", "critical_batch", "decode_point",
    "ridge_point", "Timer", "measure", "memory_planner", "roofline_explorer",
]


def memory_planner(**kwargs):
    """The memory planner dashboard (`labkit.profile.widgets.MemoryPlanner`: its controls and outputs)."""
    from labkit.profile.widgets import MemoryPlanner

    return MemoryPlanner(**kwargs)


def roofline_explorer(**kwargs):
    """The roofline explorer dashboard (`labkit.profile.widgets.RooflineExplorer`: its controls and outputs)."""
    from labkit.profile.widgets import RooflineExplorer

    return RooflineExplorer(**kwargs)
