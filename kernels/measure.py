"""How every kernel file checks and times itself.

Checking: relative error ||got - want|| / ||want|| against a float64 reference computed
from the same quantized values, with a tolerance derived from the arithmetic rather than
tuned until the test passes (`dot_tolerance`); outputs are poisoned with NaN before the
launch so an element the kernel forgot to write cannot pass.

Timing: a kernel that moves 10 MB takes a few microseconds on an H100, less than one
Numba launch costs on the host, so launches are captured in a CUDA graph and the graph is
replayed (`time_us`); inputs rotate over several copies so that weights are read from
device memory rather than from the 50 MB L2 cache; the result is the median over repeats,
timed with CUDA events. Bandwidth is compared with a device-to-device copy measured in the
same process (`copy_bandwidth`), counting bytes read plus bytes written.
"""
from __future__ import annotations

import gc
import statistics
import sys
from typing import Callable

import torch

U16 = 2.0**-11  # unit roundoff of float16 (round to nearest, 11 significant bits)
U32 = 2.0**-24  # unit roundoff of float32


def rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """||got - want|| / ||want|| in float64; NaN anywhere in `got` gives inf."""
    g, w = got.detach().double().cpu(), want.detach().double().cpu()
    if torch.isnan(g).any():
        return float("inf")
    return (torch.linalg.vector_norm(g - w) / torch.linalg.vector_norm(w).clamp_min(1e-300)).item()


def dot_tolerance(terms: int, want: torch.Tensor, abs_want: torch.Tensor) -> float:
    """Bound on the relative error of fp32-accumulated dot products rounded to fp16.

    Summing `terms` products in float32 errs by at most gamma = n*u32 / (1 - n*u32) times
    the sum of |products| (`abs_want`, the same computation on absolute values); rounding
    the result to float16 adds at most u16 relative. Norm-wise:
        ||err|| / ||want|| <= u16 + gamma * ||abs_want|| / ||want||   (+ a u16 margin for
    the fp16 rounding of inputs that the kernel and the reference round differently).
    """
    gamma = terms * U32 / (1 - terms * U32)
    cond = (torch.linalg.vector_norm(abs_want.double().cpu()) /
            torch.linalg.vector_norm(want.double().cpu()).clamp_min(1e-300)).item()
    return 2 * U16 + gamma * cond


def poisoned(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An output buffer full of NaN: any element the kernel does not write stays NaN."""
    return torch.full(shape, float("nan"), dtype=dtype, device=device)


def assert_close(name: str, got: torch.Tensor, want: torch.Tensor, tol: float) -> float:
    """Check that every element was written and the relative error is within `tol`."""
    if torch.isnan(got.float()).any():
        missing = int(torch.isnan(got.float()).sum())
        raise AssertionError(f"{name}: {missing} of {got.numel()} output elements left unwritten (NaN)")
    err = rel_error(got, want)
    if not err <= tol:
        raise AssertionError(f"{name}: relative error {err:.3g} exceeds tolerance {tol:.3g}")
    return err


def synchronize() -> None:
    """Wait for queued GPU work, if a GPU is in use (a no-op on a CPU; it never starts CUDA), so
    that a host clock read after it includes that work."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def time_us(step: Callable[[int], None], sets: int, calls: int = 20, repeats: int = 15) -> float:
    """Median microseconds per call of `step(i)` (i cycles over `sets` input copies).

    `calls` steps are captured in one CUDA graph; each of `repeats` replays is timed
    with CUDA events; the result is the median replay time divided by `calls`.
    """
    for i in range(sets):  # warm up: compile, load modules, create handles before capture
        step(i)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        with torch.cuda.graph(graph, stream=side):
            for c in range(calls):
                step(c % sets)
    torch.cuda.current_stream().wait_stream(side)
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000 / calls)
    del graph
    return statistics.median(times)


def copy_bandwidth(nbytes: int = 1 << 30, device: str = "cuda") -> float:
    """Device-to-device copy bandwidth in GB/s (bytes read + bytes written per second).

    Timed eagerly (events around 10 copies), not in a graph: a copy recorded in a CUDA
    graph becomes a memcpy node, which moves fewer bytes per second than the same copy
    launched directly.
    """
    src = torch.empty(nbytes // 2, dtype=torch.float16, device=device).normal_()
    dst = torch.empty_like(src)
    for _ in range(200):  # ~0.5 s of copies first: an idle GPU starts at low clocks
        dst.copy_(src)
    times = []
    for _ in range(7):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(10):
            dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 10 * 1e-3)
    return 2 * nbytes / statistics.median(times) / 1e9


def log(msg: str) -> None:
    """A benchmark's progress line, on stderr (stdout carries the table or the JSON)."""
    print(msg, file=sys.stderr, flush=True)


def free_memory() -> None:
    """Give back the memory of the tensors, models and engines the caller has dropped."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def sets_for(nbytes_per_set: int, l2_bytes: int = 50 << 20) -> int:
    """How many input copies to rotate over so that one pass does not fit in L2."""
    return max(2, min(16, -(-4 * l2_bytes // max(nbytes_per_set, 1))))


def check_int4_linear(kernel: Callable[..., object], m: int, n: int, k: int, group_size: int, seed: int | None,
                      **options: object) -> float:
    """Check an int4 linear kernel, called as `kernel(x, qweight, qzeros, scales, group_size,
    out=out, **options)`, for M rows of X on fresh random inputs against float64 over the
    dequantized weights."""
    from labkit.kernels.launch import device
    from labkit.kernels.packing import dequantize_int4, random_int4_layer

    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    qweight, qzeros, scales = random_int4_layer(n, k, group_size, device(), gen)
    x = torch.randn(m, k, generator=gen).half().to(device())
    w = dequantize_int4(qweight, qzeros, scales, group_size).double()
    want, abs_want = x.double() @ w.t(), x.double().abs() @ w.abs().t()
    out = poisoned((m, n), torch.float16, device())
    kernel(x, qweight, qzeros, scales, group_size, out=out, **options)
    return assert_close(f"{kernel.__name__} M={m} N={n} K={k} g={group_size}", out, want,
                        dot_tolerance(k, want, abs_want))


def bench_int4_linear(kernel: Callable[..., object], m: int, n: int, k: int, group_size: int) -> dict:
    """Time `kernel(x, qweight, qzeros, scales, group_size, out=out)` and fp16 torch.matmul for
    M rows on one layer shape (GPU only): a bench row without the derived columns."""
    from labkit.kernels.packing import random_int4_layer

    layer_bytes = k * n // 2 + (k // group_size) * n * 5 // 2  # codes, fp16 scales, packed zeros
    sets = sets_for(layer_bytes)
    layers = [random_int4_layer(n, k, group_size, "cuda") for _ in range(sets)]
    x = torch.randn(m, k, device="cuda").half()
    out = torch.empty(m, n, device="cuda", dtype=torch.float16)
    us = time_us(lambda i: kernel(x, *layers[i], group_size, out=out), sets)
    dense = [torch.randn(k, n, device="cuda").half() for _ in range(sets_for(2 * k * n))]
    torch_us = time_us(lambda i: torch.matmul(x, dense[i], out=out), len(dense))
    return {"kernel": kernel.__name__, "shape": f"M={m} N={n} K={k} g={group_size}", "us": us,
            "bytes": layer_bytes + 2 * m * (k + n), "flops": 2 * m * n * k, "torch_us": torch_us}
