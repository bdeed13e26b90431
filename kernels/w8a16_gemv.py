"""W8A16 GEMV: y = x @ W.T for one token, W stored as int8 [N, K] with fp16 group scales.

The int8 layout is row-major like W (docs/internals.md), so here one warp owns one output
row and its 32 lanes walk along K with 16-byte loads (16 weights each): a warp reads 512
contiguous bytes per load instruction, every load is coalesced, and the row's dot product
ends with a 5-step shuffle reduction instead of shared memory. Each lane issues UNROLL
loads before using any. A signed byte becomes a float without an int->float instruction:
(b ^ 0x80) | 0x4B000000 is the float 2**23 + b + 128.

Per-channel scales are the case group_size = K.
"""
from __future__ import annotations

import numpy as np
import torch
from numba import cuda, float32, uint32

from labkit.kernels import launch as L
from labkit.kernels import measure, ptx
from labkit.kernels.w4a16_gemv import MAGIC

WARPS = 4  # rows per block
UNROLL = 4  # 16-byte loads in flight per lane
WORDS_IN_FLIGHT = 4 * UNROLL
BYTE = np.uint32(0xFF)
SIGN = np.uint32(0x80)
SIGN_MAGIC = MAGIC | SIGN  # (b ^ 0x80) | MAGIC == b ^ SIGN_MAGIC: the float 2**23 + 128 + b
OFFSET = np.float32(2.0**23 + 128)


def reference(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, group_size: int) -> torch.Tensor:
    """x @ W.T in float64 with W[n, k] = q[n, k] * s[n, k // g]."""
    return x.double() @ dequantize_int8(qweight, scales, group_size).double().t()


def dequantize_int8(qweight: torch.Tensor, scales: torch.Tensor, group_size: int) -> torch.Tensor:
    """The dense W [N, K] (dtype of `scales`) of an int8 layer: the torch fallback."""
    return qweight.to(scales.dtype) * scales.repeat_interleave(group_size, dim=1)


@L.kernel(threads=32 * WARPS)
def gemv8(x, qweight, scales, group_size, sign_magic, out):
    # sign_magic = SIGN_MAGIC as an argument, so that it sits in a register and
    # (w & 0xFF) ^ sign_magic is one LOP3 (see w4a16_gemv.dot_round)
    # x: fp16 [K] as int32 pairs; qweight: int8 [N, K] as int32 [N, K/4]; scales fp16 [N, K/g]
    n_rows, row_words = qweight.shape
    lane = cuda.threadIdx.x % 32
    row = cuda.blockIdx.x * WARPS + cuda.threadIdx.x // 32
    wq = cuda.local.array(WORDS_IN_FLIGHT, uint32)
    total = float32(0)
    if row < n_rows:  # warp-uniform: all lanes of a warp share the row
        for base in range(4 * lane, row_words, 4 * 32 * UNROLL):
            for u in range(UNROLL):  # lane's chunks base, base + 128, ... : 16 bytes each
                c = base + 4 * 32 * u
                if c < row_words:
                    w0, w1, w2, w3 = ptx.load_u32x4(qweight, row * row_words + c)
                    wq[4 * u], wq[4 * u + 1], wq[4 * u + 2], wq[4 * u + 3] = w0, w1, w2, w3
            for u in range(UNROLL):
                c = base + 4 * 32 * u
                if c < row_words:
                    dot = float32(0)
                    for i in range(4):  # word i of the chunk: weights 4c + 4i .. 4c + 4i + 3
                        x01, x23 = ptx.load_u32x2(x, 2 * c + 2 * i)
                        x0, x1 = ptx.halves(x01)
                        x2, x3 = ptx.halves(x23)
                        w = wq[4 * u + i]
                        dot += (ptx.as_float((w & BYTE) ^ sign_magic) - OFFSET) * x0
                        dot += (ptx.as_float(((w >> uint32(8)) & BYTE) ^ sign_magic) - OFFSET) * x1
                        dot += (ptx.as_float(((w >> uint32(16)) & BYTE) ^ sign_magic) - OFFSET) * x2
                        dot += (ptx.as_float((w >> uint32(24)) ^ sign_magic) - OFFSET) * x3
                    total += dot * float32(scales[row, (4 * c) // group_size])
    for offset in (16, 8, 4, 2, 1):
        total += ptx.shfl_xor(total, offset)
    if lane == 0 and row < n_rows:
        out[row] = total


def w8a16_gemv(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, group_size: int,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """x @ W.T for one fp16 row x ([K] or [1, K]) and int8 W [N, K]: fp16 [..., N].

    Needs K % 16 == 0 and group_size % 16 == 0 (a 16-byte load stays in one group).
    """
    n, k = qweight.shape
    L.require(x.dtype == torch.float16 and x.numel() == k and x.is_contiguous(),
              f"w8a16_gemv wants a contiguous fp16 x with {k} elements, got {x.dtype} {tuple(x.shape)}")
    L.require(qweight.dtype == torch.int8 and k % 16 == 0 and group_size % 16 == 0 and k % group_size == 0,
              f"w8a16_gemv needs int8 weights, K % 16 == 0 and group_size % 16 == 0, got K={k}, g={group_size}")
    L.require(scales.shape == (n, k // group_size), "w8a16_gemv: scales shape does not match qweight")
    for t in (x, qweight):
        L.require(t.is_contiguous() and t.data_ptr() % 16 == 0, "w8a16_gemv needs contiguous 16-byte aligned tensors")
    if out is None:
        out = torch.empty(*x.shape[:-1], n, dtype=torch.float16, device=x.device)
    L.launch(gemv8, (-(-n // WARPS),), (32 * WARPS,), x.view(torch.int32), qweight.view(torch.int32),
             scales, group_size, SIGN_MAGIC, out.view(-1))
    return out


def random_int8_layer(n: int, k: int, group_size: int, device: str | torch.device = "cpu",
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random int8 codes over the full range [-128, 127] and fp16 scales around 1/256."""
    q = torch.randint(-128, 128, (n, k), generator=generator, dtype=torch.int8)
    s = (torch.rand(n, k // group_size, generator=generator) + 0.5) / 256
    return q.to(device), s.half().to(device)


def check(n: int = 6, k: int = 592, group_size: int = 16, seed: int | None = None) -> float:
    """Run the kernel on fresh random inputs; return the relative error (raises if too large)."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    dev = L.device()
    qweight, scales = random_int8_layer(n, k, group_size, dev, gen)
    x = torch.randn(k, generator=gen).half().to(dev)
    w = dequantize_int8(qweight, scales, group_size).double()
    want, abs_want = x.double() @ w.t(), x.double().abs() @ w.abs().t()
    out = measure.poisoned((n,), torch.float16, dev)
    w8a16_gemv(x, qweight, scales, group_size, out=out)
    return measure.assert_close(f"w8a16_gemv N={n} K={k} g={group_size}", out, want,
                                measure.dot_tolerance(k, want, abs_want))


def bench(n: int, k: int, group_size: int | None = None) -> dict:
    """Time the kernel (per-channel scales by default) and fp16 torch.matmul (GPU only)."""
    g = group_size or k
    sets = measure.sets_for(n * k)
    layers = [random_int8_layer(n, k, g, "cuda") for _ in range(sets)]
    x = torch.randn(1, k, device="cuda").half()
    out = torch.empty(1, n, device="cuda", dtype=torch.float16)
    us = measure.time_us(lambda i: w8a16_gemv(x, *layers[i], g, out=out), sets)
    dense = [torch.randn(k, n, device="cuda").half() for _ in range(measure.sets_for(2 * k * n))]
    torch_us = measure.time_us(lambda i: torch.matmul(x, dense[i], out=out), len(dense))
    return {"kernel": "w8a16_gemv", "shape": f"N={n} K={k} g={g}", "us": us,
            "bytes": n * k + 2 * n * (k // g) + 2 * (k + n), "flops": 2 * n * k, "torch_us": torch_us}
