"""The road from a naive int4 GEMV to w4a16_gemv.py, one idea per step (notebook 07).

Every step computes the same y = x @ W.T from the AWQ-packed tensors; each fixes what
limited the one before (each step's time at 4096 x 4096, group 128: docs/benchmarks.md):

1. `naive`: one thread per output column, looping over all K rows. Neighbouring threads
   read the same word (8 columns share it), so a warp touches 16 bytes per row: a sliver
   of each 32-byte sector, and every thread unpacks with shifts and int->float converts.
2. `per_word`: one thread per packed word (8 columns). A warp now reads 128 contiguous
   bytes per row, each word is loaded once; but 4096 columns are only 512 threads, far too
   few loads in flight to cover memory latency on 132 SMs.
3. `split_k`: the same, with K split over 8 threads per word and summed in shared memory:
   8x the threads and loads in flight.
4. `w4a16_gemv.w4a16_gemv`: 16-byte loads (4 words per thread; one word on small layers, for
   more threads), runs of 32 rows streamed through a ring of register stages (two rounds of
   8 rows loading while one is computed), nibbles read as subnormal floats (one AND, one FMA
   per weight), K split across blocks as well.
"""
from __future__ import annotations

import torch
from numba import cuda, float32

from labkit.kernels import launch as L
from labkit.kernels.packing import AWQ_REVERSE_ORDER

STEPS = ("naive", "per_word", "split_k", "fast")
SLICES = 8  # threads per word along K in split_k


@L.kernel(threads=128)
def naive(x, qweight, qzeros, scales, group_size, out):
    n = cuda.grid(1)
    if n < out.shape[0]:
        shift = 4 * AWQ_REVERSE_ORDER[n % 8]  # column n sits in this nibble of word n // 8
        acc = float32(0)
        for k in range(qweight.shape[0]):
            g = k // group_size
            q = (qweight[k, n // 8] >> shift) & 0xF
            z = (qzeros[g, n // 8] >> shift) & 0xF
            acc += float32(x[k]) * float32(q - z) * float32(scales[g, n])
        out[n] = acc


@cuda.jit(device=True, inline="always")
def word_dot(x, qweight, qzeros, scales, group_size, word, k_start, k_step, acc):
    """acc[c] += sum over rows k_start, k_start + k_step, ... of x_k * W.T[k, 8 word + c]."""
    for k in range(k_start, qweight.shape[0], k_step):
        g = k // group_size
        w, z, xk = qweight[k, word], qzeros[g, word], float32(x[k])
        for c in range(8):
            shift = 4 * AWQ_REVERSE_ORDER[c]
            q = float32(((w >> shift) & 0xF) - ((z >> shift) & 0xF))
            acc[c] += xk * q * float32(scales[g, 8 * word + c])


@L.kernel(threads=128)
def per_word(x, qweight, qzeros, scales, group_size, out):
    word = cuda.grid(1)
    acc = cuda.local.array(8, float32)
    for c in range(8):
        acc[c] = 0
    if word < qweight.shape[1]:
        word_dot(x, qweight, qzeros, scales, group_size, word, 0, 1, acc)
        for c in range(8):
            out[8 * word + c] = acc[c]


@L.kernel(threads=32 * SLICES)
def split_k(x, qweight, qzeros, scales, group_size, out):
    word = cuda.blockIdx.x * 32 + cuda.threadIdx.x
    part = cuda.local.array(8, float32)
    for c in range(8):
        part[c] = 0
    if word < qweight.shape[1]:
        word_dot(x, qweight, qzeros, scales, group_size, word, cuda.threadIdx.y, SLICES, part)
    red = cuda.shared.array((SLICES, 32, 9), float32)  # 9: padding against bank conflicts
    for c in range(8):
        red[cuda.threadIdx.y, cuda.threadIdx.x, c] = part[c]
    cuda.syncthreads()
    if cuda.threadIdx.y == 0 and word < qweight.shape[1]:
        for c in range(8):
            total = float32(0)
            for s in range(SLICES):
                total += red[s, cuda.threadIdx.x, c]
            out[8 * word + c] = total


def run(step: str, x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
        group_size: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """y = x @ W.T (fp16 [N]) computed by one of STEPS."""
    from labkit.kernels.w4a16_gemv import w4a16_gemv

    n = qweight.shape[1] * 8
    x = x.reshape(-1)
    out = out if out is not None else torch.empty(n, dtype=torch.float16, device=x.device)
    if step == "naive":
        L.launch(naive, (-(-n // 128),), (128,), x, qweight, qzeros, scales, group_size, out)
    elif step == "per_word":
        L.launch(per_word, (-(-n // 8 // 128),), (128,), x, qweight, qzeros, scales, group_size, out)
    elif step == "split_k":
        L.launch(split_k, (-(-n // 8 // 32),), (32, SLICES), x, qweight, qzeros, scales, group_size, out)
    elif step == "fast":
        w4a16_gemv(x, qweight, qzeros, scales, group_size, out=out)
    else:
        raise ValueError(f"unknown step {step!r}; expected one of {STEPS}")
    return out


def bench(n: int = 4096, k: int = 4096, group_size: int = 128) -> list[dict]:
    """Time every step on one layer shape (GPU only): the points of the notebook's roofline."""
    from labkit.kernels import measure
    from labkit.kernels.packing import random_int4_layer

    layers = [random_int4_layer(n, k, group_size, "cuda") for _ in range(measure.sets_for(k * n // 2))]
    x = torch.randn(k, device="cuda").half()
    out = torch.empty(n, device="cuda", dtype=torch.float16)
    nbytes = k * n // 2 + (k // group_size) * n * 5 // 2 + 2 * (k + n)
    return [{"kernel": f"gemv step {step}", "shape": f"N={n} K={k} g={group_size}", "bytes": nbytes,
             "flops": 2 * n * k, "us": measure.time_us(lambda i: run(step, x, *layers[i], group_size, out=out),
                                                        len(layers))} for step in STEPS]
