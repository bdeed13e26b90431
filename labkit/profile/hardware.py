"""Accelerator specs: memory, bandwidth and peak matmul rate, from data sheets or measured.

Three numbers decide how fast a model can be served: how much it can hold (memory), how fast
it can read what it holds (bandwidth), and how fast it can multiply (peak FLOP/s). Their
ratio, the *ridge point* `peak / bandwidth` in FLOPs per byte, says how much work a kernel
must do per byte it reads before the arithmetic, not the memory, becomes the limit.

Data-sheet numbers are dense fp16/bf16 tensor-core peaks (no 2:4 sparsity) and are rarely
reached; `measure_device` gives what this machine actually does (a large copy and a large
matmul), which is the honest roofline to compare measurements with.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Device:
    """One accelerator. `tflops` is the dense fp16 peak (fp32 for a CPU, which lacks fast fp16)."""

    name: str
    memory_gb: float
    bandwidth_gbs: float     # GB/s of device memory
    tflops: float            # TFLOP/s
    note: str = ""

    @property
    def bytes_per_s(self) -> float:
        return self.bandwidth_gbs * 1e9

    @property
    def flops_per_s(self) -> float:
        return self.tflops * 1e12

    @property
    def ridge(self) -> float:
        """FLOPs per byte at which a kernel stops being memory-bound on this device."""
        return self.flops_per_s / self.bytes_per_s


#: Data-sheet numbers (dense fp16 tensor-core peak, no sparsity).
GPUS: dict[str, Device] = {d.name: d for d in [
    Device("H100 SXM", 80, 3350, 989, "HBM3"),
    Device("H100 PCIe", 80, 2000, 756, "HBM2e"),
    Device("H200", 141, 4800, 989, "HBM3e, H100 compute with more and faster memory"),
    Device("A100 80GB", 80, 2039, 312, "SXM, HBM2e"),
    Device("A100 40GB", 40, 1555, 312, "HBM2"),
    Device("L4", 24, 300, 121, "GDDR6, 72 W inference card"),
    Device("RTX 4090", 24, 1008, 165, "GDDR6X; fp32 accumulate (330 with fp16 accumulate)"),
    Device("T4", 16, 320, 65, "GDDR6, the free Colab GPU"),
]}

THIS_MACHINE = "this machine (measured)"


def _total_ram_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):
        return 0.0


def measure_bandwidth(device: str = "cpu", megabytes: int = 256, repeats: int = 5) -> float:
    """Measured copy bandwidth in GB/s: a copy reads and writes every byte, so 2 x size moves.

    On a GPU this is the kernels' figure, `labkit.kernels.measure.copy_bandwidth` (CUDA events
    after a warm-up that lifts the clocks; `repeats` counts on a CPU only), so every roofline
    in labkit uses one measurement.
    """
    if str(device).startswith("cuda"):
        from labkit.kernels.measure import copy_bandwidth

        return copy_bandwidth(megabytes * 2**20, str(device))
    from labkit.profile.timing import measure

    n = megabytes * 2**20 // 4
    src = torch.ones(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    seconds = measure(lambda: dst.copy_(src), repeats=repeats, warmup=1)
    return 2 * src.nbytes / seconds / 1e9


def measure_matmul(device: str = "cpu", n: int | None = None, dtype: torch.dtype | None = None, repeats: int = 5) -> float:
    """Measured matmul rate in TFLOP/s for an n x n product (fp16 on a GPU, fp32 on a CPU)."""
    from labkit.profile.timing import measure

    cuda = str(device).startswith("cuda")
    dtype = dtype or (torch.float16 if cuda else torch.float32)
    n = n or (8192 if cuda else 1024)
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    seconds = measure(lambda: a @ b, repeats=repeats, warmup=1)
    return 2 * n**3 / seconds / 1e12


@functools.lru_cache(maxsize=None)
def measure_device(device: str = "cpu") -> Device:
    """This machine's CPU (or `cuda`) as a `Device`, from a timed copy and a timed matmul (~1 s).

    Cached: later calls in the same process return the first measurement.
    """
    if str(device).startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        name, memory = f"this GPU ({props.name}, measured)", props.total_memory / 1e9
        note = "fp16 matmul, 1 GB copy"
        bandwidth = measure_bandwidth(device, megabytes=1024)
    else:
        name, memory = f"this CPU ({torch.get_num_threads()} threads, measured)", _total_ram_gb()
        note = "fp32 matmul, 256 MB copy"
        bandwidth = measure_bandwidth(device)
    return Device(name, round(memory, 1), round(bandwidth, 1), round(measure_matmul(device), 3), note)


def devices(include_measured: bool = False) -> dict[str, Device]:
    """The spec table; with `include_measured`, this machine measured under `THIS_MACHINE`."""
    table = dict(GPUS)
    if include_measured:
        table[THIS_MACHINE] = measure_device("cuda" if torch.cuda.is_available() else "cpu")
    return table


def get_device(name: str) -> Device:
    """A device by name; `THIS_MACHINE` (or 'this') measures this machine on first use."""
    if name in (THIS_MACHINE, "this"):
        return measure_device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return GPUS[name]
    except KeyError:
        raise KeyError(f"unknown device {name!r}; known: {', '.join([*GPUS, THIS_MACHINE])}") from None


def spec_table(include_measured: bool = False) -> str:
    """The table as Markdown (memory, bandwidth, peak, ridge point)."""
    rows = ["| device | memory GB | bandwidth GB/s | fp16 TFLOP/s | ridge FLOP/byte |", "|---|---:|---:|---:|---:|"]
    for d in devices(include_measured).values():
        rows.append(f"| {d.name} | {d.memory_gb:g} | {d.bandwidth_gbs:g} | {d.tflops:g} | {d.ridge:.0f} |")
    return "\n".join(rows)
