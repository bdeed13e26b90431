"""Quantized linear layers: pick the fastest kernel for the number of rows.

Which kernel wins depends on M, the rows of X (tokens in the step):

- M = 1 (decode, batch 1): memory-bound; the GEMV streams int4 at close to copy bandwidth.
- M = 2..TC_UP_TO: still few flops per weight byte; a tensor-core kernel loads and
  dequantizes each weight once per launch and multiplies it with up to 32 rows in mma
  instructions (its warps split K inside the block, so the split-K partial sums stay few).
  The one that stages its weights in shared memory with cp.async (w4a16_tc_async.py, two
  slabs per warp between barriers) was the fastest at 2-32 rows on every Llama-2-7B layer
  shape, within 3% of the CUDA-core GEMM on the narrowest one at 2 rows (docs/benchmarks.md);
  it needs N % 32 == 0. Where N is only a multiple of 8 the register-ring kernel
  (w4a16_tc.py) takes 4-32 rows and 2-3 rows on wide layers (N >= 3K), and the CUDA-core
  GEMM (w4a16_gemm.py, one fp32 FMA per weight and row) the rest up to GEMM_UP_TO rows, with
  the group sizes the tensor-core kernels do not take (not a power of two). On an H200 a
  layer's int4 linears beat fp16 cuBLAS on the same layer up to 16 rows (0.91x its time) and
  are slower at 24 and 32 (1.06x, 1.20x; docs/benchmarks.md).
- Larger M (prefill, big batches): compute-bound; dequantize to fp16 once and let cuBLAS
  run the matmul on tensor cores.

The crossover points come from `labkit bench kernels` (its dispatch table, kept in
docs/benchmarks.md, checks that no M is more than 10% slower than the best option). Shapes
the kernels do not take (N % 32 != 0 for the GEMV, group sizes not a multiple of 32) go to
dequantize + matmul, and CPU tensors to plain torch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from labkit.kernels.packing import dequantize_int4

GEMM_UP_TO = 16  # largest M for which the GEMM beat dequantize + matmul (docs/benchmarks.md)
TC_UP_TO = 32  # one tensor-core launch (w4a16_tc.MAX_ROWS)
KERNELS = ("gemv", "gemm", "tc", "tc_async", "dequant_matmul", "torch")


def choose(m: int, n: int, k: int, group_size: int) -> str:
    """The kernel `w4a16_linear` uses for M rows on a CUDA device."""
    if group_size % 32 or k % group_size:
        return "dequant_matmul"
    if m == 1 and n % 32 == 0:
        return "gemv"
    power_of_two = group_size & (group_size - 1) == 0
    if 2 <= m <= TC_UP_TO and power_of_two and n % 32 == 0:
        return "tc_async"
    if 2 <= m <= TC_UP_TO and (m >= 4 or n >= 3 * k) and power_of_two:
        return "tc"
    if m <= GEMM_UP_TO:
        return "gemm"
    return "dequant_matmul"


def w4a16_linear(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                 group_size: int, kernel: str | None = None) -> torch.Tensor:
    """x @ W.T for x [..., K] and AWQ-packed int4 W (qweight [K, N/8], qzeros, scales).

    On CUDA tensors the kernel is chosen by `choose`; CPU tensors use torch (dequantize,
    then matmul in x's dtype). `kernel` forces one of KERNELS (the bench times each; tests
    run them in the CUDA simulator on CPU tensors).
    """
    k, n = qweight.shape[0], qweight.shape[1] * 8
    rows = x.reshape(-1, k)
    if kernel is None:
        kernel = choose(rows.shape[0], n, k, group_size) if x.is_cuda else "torch"
    if kernel == "torch":
        y = F.linear(rows, dequantize_int4(qweight, qzeros, scales, group_size).to(x.dtype))
    else:
        y = _run(kernel, rows.to(torch.float16).contiguous(), qweight, qzeros, scales, group_size).to(x.dtype)
    return y.reshape(*x.shape[:-1], n)


def _run(kernel: str, x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
         group_size: int) -> torch.Tensor:
    from labkit.kernels import dequant, w4a16_gemm, w4a16_gemv, w4a16_tc, w4a16_tc_async

    if kernel == "gemv":
        return w4a16_gemv.w4a16_gemv(x, qweight, qzeros, scales, group_size)
    chunked = {"gemm": (w4a16_gemm.w4a16_gemm, w4a16_gemm.MAX_ROWS), "tc": (w4a16_tc.w4a16_tc, w4a16_tc.MAX_ROWS),
               "tc_async": (w4a16_tc_async.w4a16_tc_async, w4a16_tc_async.MAX_ROWS)}
    if kernel in chunked:   # a launch per MAX_ROWS rows
        run, step = chunked[kernel]
        parts = [run(x[i:i + step], qweight, qzeros, scales, group_size) for i in range(0, x.shape[0], step)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)
    if kernel == "dequant_matmul":
        return x @ dequant.dequantize_t(qweight, qzeros, scales, group_size)
    raise ValueError(f"unknown kernel {kernel!r}; expected one of {KERNELS}")


def w8a16_linear(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, group_size: int) -> torch.Tensor:
    """x @ W.T for x [..., K] and int8 W [N, K] with fp16 scales [N, K // g].

    One row on a CUDA device runs the W8A16 GEMV; otherwise W is dequantized and torch
    multiplies (several rows are compute-bound enough that int8 brings no speed).
    """
    from labkit.kernels.w8a16_gemv import dequantize_int8, w8a16_gemv

    n, k = qweight.shape
    rows = x.reshape(-1, k)
    if x.is_cuda and rows.shape[0] == 1 and k % 16 == 0 and group_size % 16 == 0:
        y = w8a16_gemv(rows.to(torch.float16).contiguous(), qweight, scales, group_size).to(x.dtype)
    else:
        y = F.linear(rows, dequantize_int8(qweight, scales, group_size).to(x.dtype))
    return y.reshape(*x.shape[:-1], n)
