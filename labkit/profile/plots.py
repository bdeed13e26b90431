"""Matplotlib figures for the profiling chapter (rooflines, memory, queues).

Each function draws on an `ax` if given (the dashboards pass axes of their own figures) or
on a new pyplot figure, and returns the axes. Kept here so that notebook cells stay one line
and the same drawing serves the notebooks and the widgets.
"""
from __future__ import annotations

import io
from typing import Iterable, Sequence

import numpy as np

from labkit.models.llama import LlamaConfig
from labkit.profile import cost
from labkit.profile.hardware import Device
from labkit.profile.roofline import attainable_flops, decode_sweep
from labkit.profile.traffic import QueueResult, rolling_rate

COLORS = {"weights": "#4c72b0", "kv_cache": "#dd8452", "activations": "#55a868"}


def _axes(ax, figsize=(6.4, 4.0)):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize, layout="constrained")[1]


def figure_png(fig, dpi: int = 90) -> bytes:
    """A figure rendered to PNG bytes (what an `ipywidgets.Image` shows)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def new_figure(figsize=(6.4, 4.0)):
    """A figure that belongs to no pyplot state (never shown twice, never leaked)."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def plot_roofline(device: Device, points: Iterable[tuple[str, float, float]] = (), ax=None,
                  intensity_range: tuple[float, float] = (0.1, 1e4)):
    """The roofline of `device` with measured or estimated points (label, FLOPs/byte, FLOP/s)."""
    ax = _axes(ax)
    x = np.logspace(np.log10(intensity_range[0]), np.log10(intensity_range[1]), 200)
    roof = np.array([attainable_flops(i, device) for i in x]) / 1e12
    ax.loglog(x, roof, color="black", lw=2, label=f"roofline: {device.name}")
    ax.axvline(device.ridge, color="gray", ls="--", lw=1)
    ax.annotate(f"ridge {device.ridge:.0f} FLOP/B", (device.ridge, device.tflops), textcoords="offset points",
                xytext=(5, -15), fontsize=8, color="gray")
    for label, intensity, flops in points:
        ax.loglog([intensity], [flops / 1e12], "o", ms=7, label=label)
    ax.set_xlabel("arithmetic intensity (FLOPs / byte)")
    ax.set_ylabel("TFLOP/s")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, which="both", alpha=0.2)
    return ax


def plot_decode_roofline(config: LlamaConfig, device: Device, batches: Sequence[int], context: int,
                         weight_bits: float = 16, kv_bits: float = 16, highlight: int | None = None, ax=None):
    """Decode steps at several batch sizes on the roofline: they slide up the memory roof."""
    pts = decode_sweep(config, device, list(batches), context, weight_bits, kv_bits)
    lo = min(p.intensity for p in pts) / 3
    hi = max(max(p.intensity for p in pts) * 3, device.ridge * 10)
    ax = plot_roofline(device, ax=ax, intensity_range=(lo, hi))
    ax.loglog([p.intensity for p in pts], [p.attainable_flops / 1e12 for p in pts], "o-", color="#4c72b0",
              ms=4, label=f"decode, context {context}")
    for p in pts:
        ax.annotate(f"B={p.batch}", (p.intensity, p.attainable_flops / 1e12), fontsize=7,
                    textcoords="offset points", xytext=(3, 4))
    if highlight is not None:
        h = next((p for p in pts if p.batch == highlight), None)
        if h is not None:
            ax.loglog([h.intensity], [h.attainable_flops / 1e12], "o", ms=11, mfc="none", mec="red", mew=2,
                      label=f"batch {h.batch}: {h.bound}-bound")
    ax.legend(fontsize=8, loc="lower right")
    return ax


def plot_memory_breakdown(plan: cost.MemoryPlan, label: str = "", ax=None):
    """One stacked bar: weights, KV cache, activations, against the device's usable memory."""
    ax = _axes(ax, (6.4, 2.4))
    left = 0.0
    for part in ("weights", "kv_cache", "activations"):
        gb = getattr(plan, part) / cost.GB
        ax.barh([label or "plan"], [gb], left=left, color=COLORS[part], label=f"{part.replace('_', ' ')} {gb:.2f} GB")
        left += gb
    if plan.capacity is not None:
        cap = plan.capacity / cost.GB
        ax.axvline(cap, color="red", ls="--", label=f"usable memory {cap:.1f} GB")
    ax.set_xlabel("GB")
    # below the axes, in space the figure's constrained layout sets aside (an axes legend there was clipped)
    ax.figure.legend(*ax.get_legend_handles_labels(), fontsize=8, loc="outside lower center", ncol=2)
    return ax


def plot_memory_growth(config: LlamaConfig, batches: Sequence[int], contexts: Sequence[int], weight_bits: float = 16,
                       kv_bits: float = 16, memory_gb: float | None = None, ax=None, name: str = ""):
    """Total memory (weights + KV cache + activations) against context, one line per batch size."""
    ax = _axes(ax)
    w = cost.param_bytes(config, weight_bits) / cost.GB
    for b in batches:
        totals = [cost.memory_plan(config, b, c, weight_bits, kv_bits).total / cost.GB for c in contexts]
        ax.plot(contexts, totals, "o-", ms=3, label=f"batch {b}")
    ax.axhline(w, color=COLORS["weights"], ls=":", label=f"weights alone {w:.1f} GB")
    if memory_gb is not None:
        ax.axhline(memory_gb, color="red", ls="--", label=f"device memory {memory_gb:g} GB")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("context (tokens per sequence)")
    ax.set_ylabel("GB")
    ax.set_title(f"memory of {name or 'the model'}: the KV cache grows with batch x context", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.2)
    return ax


def plot_arrivals(arrivals: dict[str, np.ndarray], duration: float, capacity: float | None = None,
                  window: float = 1.0, ax=None):
    """Requests per second over time for each arrival process, with the server's capacity."""
    ax = _axes(ax)
    for label, times in arrivals.items():
        t, r = rolling_rate(times, duration, window)
        ax.step(t, r, where="post", label=label, lw=1)
    if capacity is not None:
        ax.axhline(capacity, color="red", ls="--", label=f"capacity {capacity:.1f} req/s")
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"requests / s (per {window:g} s)")
    ax.legend(fontsize=8)
    return ax


def plot_queue(results: dict[str, QueueResult], ax=None):
    """Queueing delay of each request against its arrival time."""
    ax = _axes(ax)
    for label, r in results.items():
        s = r.summary()
        ax.plot(r.arrival, r.wait, lw=1, label=f"{label}: p50 {s['p50_wait_s']:.2f} s, p99 {s['p99_wait_s']:.2f} s")
    ax.set_xlabel("arrival time (s)")
    ax.set_ylabel("wait before service (s)")
    ax.legend(fontsize=8)
    return ax
