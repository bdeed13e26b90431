"""Solution to exercise 07b: the naive dequantizing GEMV kernel."""
from __future__ import annotations

import torch

from labkit.kernels import launch  # first: without a GPU, labkit.kernels selects numba's CUDA simulator
from labkit.kernels.packing import AWQ_REVERSE_ORDER
from numba import cuda, float32  # noqa: E402

THREADS = 32


@cuda.jit
def naive_gemv(x, qweight, qzeros, scales, group_size, out):
    """out[n] for n = cuda.grid(1)."""
    n = cuda.grid(1)
    if n < out.shape[0]:
        shift = 4 * AWQ_REVERSE_ORDER[n % 8]
        acc = float32(0)
        for k in range(qweight.shape[0]):
            g = k // group_size
            q = (qweight[k, n // 8] >> shift) & 0xF
            z = (qzeros[g, n // 8] >> shift) & 0xF
            acc += float32(x[k]) * float32(q - z) * float32(scales[g, n])
        out[n] = acc


def gemv(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
         group_size: int, out: torch.Tensor) -> torch.Tensor:
    """Launch `naive_gemv` with one thread per output column."""
    n = qweight.shape[1] * 8
    launch.launch(naive_gemv, (-(-n // THREADS),), (THREADS,), x, qweight, qzeros, scales, group_size, out)
    return out
