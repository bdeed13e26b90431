"""Exercise 07b (chapter 07): the naive dequantizing GEMV kernel, in Numba.

Then run the check in notebook 07, or:

    labkit grade ex07_naive_gemv --impl exercises/ex07_naive_gemv.py

Without a GPU the kernel runs in Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1), which
the notebook and the grader set up for you. Write `naive_gemv`: one thread per output
column n computes

    out[n] = sum over k of x[k] * (q[k, n] - z[k // g, n]) * s[k // g, n]

where q[k, n] is nibble AWQ_REVERSE_ORDER[n % 8] of qweight[k, n // 8] (bits 4i .. 4i + 3
for nibble i), z the same nibble of qzeros[k // g, n // 8], and s = scales[k // g, n].
Accumulate in float32; threads with n >= N must write nothing. `gemv` (given) launches it.
"""
from __future__ import annotations

import torch

from labkit.kernels import launch  # first: without a GPU, labkit.kernels selects numba's CUDA simulator
from labkit.kernels.packing import AWQ_REVERSE_ORDER  # noqa: F401  (column c of a word is in this nibble)
from numba import cuda, float32  # noqa: F401,E402  (float32: accumulate in it)

THREADS = 32


@cuda.jit
def naive_gemv(x, qweight, qzeros, scales, group_size, out):
    """out[n] for n = cuda.grid(1): x fp16 [K], qweight int32 [K, N/8], qzeros int32 [K/g, N/8],
    scales fp16 [K/g, N], out fp16 [N]."""
    raise NotImplementedError(
        "write naive_gemv (one thread per output column) in exercises/ex07_naive_gemv.py; "
        "notebook 07, section '2 · From a naive kernel to a fast one', explains it")


def gemv(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
         group_size: int, out: torch.Tensor) -> torch.Tensor:
    """Launch `naive_gemv` with one thread per output column (given, nothing to write here)."""
    n = qweight.shape[1] * 8
    launch.launch(naive_gemv, (-(-n // THREADS),), (THREADS,), x, qweight, qzeros, scales, group_size, out)
    return out
