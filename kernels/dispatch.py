"""Quantized linear layers: pick the fastest kernel for the number of rows.

Which kernel wins depends on M, the rows of X (tokens in the step):

- M = 1 (decode, batch 1): memory-bound; the GEMV streams int4 at close to copy bandwidth.
- M = 2..GEMM_UP_TO: still few flops per weight byte; the GEMM dequantizes each weight once
  and reuses it for every row (8 rows per launch, so M = 9..16 takes two launches). On
  wide layers the tensor-core kernel (w4a16_tc.py) is faster: from M = 4 when N >= 2K (the
  gate/up projection, 11008 x 4096), from M = 2 when N >= 3K (fused QKV, the LM head), and
  for M = 9..16 as two launches of up to 8 rows (twice its 8-row time is about half the
  GEMM's two launches on the fused q/k/v and gate/up layers). Its multiply-adds run in mma
  instructions, where the GEMM's FMAs grow with M; on narrow layers it must split K over
  many blocks, and their M x N partial sums cost more than it saves.
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
KERNELS = ("gemv", "gemm", "tc", "dequant_matmul", "torch")


def choose(m: int, n: int, k: int, group_size: int) -> str:
    """The kernel `w4a16_linear` uses for M rows on a CUDA device."""
    if group_size % 32 or k % group_size:
        return "dequant_matmul"
    if m == 1 and n % 32 == 0:
        return "gemv"
    wide = n >= 3 * k or (m >= 4 and n >= 2 * k)
    if 2 <= m <= GEMM_UP_TO and wide and group_size & (group_size - 1) == 0:
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
    from labkit.kernels import dequant, w4a16_gemm, w4a16_gemv, w4a16_tc

    if kernel == "gemv":
        return w4a16_gemv.w4a16_gemv(x, qweight, qzeros, scales, group_size)
    chunked = {"gemm": (w4a16_gemm.w4a16_gemm, w4a16_gemm.MAX_ROWS), "tc": (w4a16_tc.w4a16_tc, w4a16_tc.MAX_ROWS)}
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
