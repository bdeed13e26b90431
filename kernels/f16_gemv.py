"""fp16 GEMV: y = x @ W.T for one token, W the model's own fp16 weight [N, K] (nn.Linear's layout).

At batch 1 an fp16 decode step reads 13 GB of weights on a 7B model, and cuBLAS does most of
that well; where it does not (the o and down projections: N = 4096 rows too few for its
tiles, so it splits K and adds a second, reducing kernel) and around it (an RMSNorm kernel
before q/k/v and gate/up, SiLU(gate) * up before down, residual adds after o and down) a
step pays small kernels that bytes do not pay for. This kernel is the fp16 twin of
`w4a16_gemv`, with the same fusions, in the layout where they are cheapest:

- One warp owns `rows` consecutive output rows and walks the whole of K: lane `l` reads
  16-byte chunks l, l + 32, ... of each row (a warp reads 512 contiguous bytes per row and
  load), `unroll` chunks per row issued before any is used. N >= 4096 rows make thousands of
  warps, enough bytes in flight without splitting K, so there is no second kernel and no
  workspace.
- Because a warp sees all of x, the fused RMSNorm is free: the warp adds up x**2 over the
  chunks it reads anyway, multiplies x by the norm weight, and scales its sums by the row's
  rms at the end (one number per row, so it can come last, as in `w4a16_gemv`).
  SiLU(gate) * up is computed per chunk from the gate and up halves of x and shared by the
  warp's `rows` rows: computed once per row of W it would cost more instructions than the
  weights' bytes allow (SiLU is ~10 instructions, a weight ~2).
- Chunks past the end of K (K not a multiple of the warp's step) are read from the last
  chunk and multiplied by zeros: one loop, no tail.
- Launched overlapped (`launch.launch(overlap=True)`), it waits for the previous kernel
  before its first load and lets the next one start launching once its warp's loads are in,
  as `w4a16_gemv` does.

`activation`, `silu` and `with_residual` are `w4a16_gemv`'s: the fused variants round as
the model does, up to the one fp16 step `w4a16_gemv.check` allows for.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
from numba import cuda, float32, uint32

from labkit.kernels import launch as L
from labkit.kernels import measure, ptx
from labkit.kernels.w4a16_gemv import PROLOGUES, activation, silu, with_residual

CHUNK = 8  # fp16 weights per 16-byte load
MAX_UNROLL = 8  # chunks per row a lane may have in flight (4 registers each)


def reference(x: torch.Tensor, weight: torch.Tensor, prologue: str = "none", norm: torch.Tensor | None = None,
              eps: float = 1e-5, residual: torch.Tensor | None = None) -> torch.Tensor:
    """residual + activation(x) @ W.T in float64: what the kernel approximates."""
    y = activation(x, prologue, norm, eps).double() @ weight.double().t()
    return y if residual is None else y + residual.double()


def load_activation(prologue: str):
    """Into slot u of xq (4 words, 8 more for two-word prologues): chunk c of x ("none"), of x and
    of the norm weight `aux` ("rmsnorm"), of the gate and the up half of x ("silu_mul"); zeros
    where the chunk lies past K (`valid` false), so that it adds nothing."""
    two = prologue != "none"
    gated = prologue == "silu_mul"

    @L.inlined
    def load(x, aux, chunks, c, valid, xq, u):
        keep = uint32(0xFFFFFFFF) if valid else uint32(0)
        x0, x1, x2, x3 = ptx.load_u32x4(x, 4 * c)
        xq[8 * u], xq[8 * u + 1], xq[8 * u + 2], xq[8 * u + 3] = x0 & keep, x1 & keep, x2 & keep, x3 & keep
        if two:  # constants: decided when the kernel is compiled
            y0, y1, y2, y3 = ptx.load_u32x4(x if gated else aux, 4 * (c + chunks) if gated else 4 * c)
            xq[8 * u + 4], xq[8 * u + 5], xq[8 * u + 6], xq[8 * u + 7] = y0, y1, y2, y3

    return load


def make_dot_chunk(prologue: str, rows: int, unroll: int):
    """dot_chunk: the activations of slot u (`activation`'s, as float32) times the slot's weights of
    each of the warp's rows, into acc[r]; for "rmsnorm" also sumsq[0] += x**2."""
    norm, gated = prologue == "rmsnorm", prologue == "silu_mul"

    @L.inlined
    def dot_chunk(wq, xq, u, acc, sumsq):
        for p in range(4):
            a_even, a_odd = ptx.halves(xq[8 * u + p])
            if norm:  # constants: decided when the kernel is compiled
                g_even, g_odd = ptx.halves(xq[8 * u + 4 + p])
                sumsq[0] += a_even * a_even + a_odd * a_odd
                a_even, a_odd = a_even * g_even, a_odd * g_odd
            elif gated:  # fp16(fp16(silu(gate)) * up), rounded as the model rounds
                up_even, up_odd = ptx.halves(xq[8 * u + 4 + p])
                a_even, a_odd = ptx.halves(ptx.pack_halves(silu(a_even), silu(a_odd)))
                a_even, a_odd = ptx.halves(ptx.pack_halves(a_even * up_even, a_odd * up_odd))
            for r in range(rows):
                w_even, w_odd = ptx.halves(wq[(r * unroll + u) * 4 + p])
                acc[r] += w_even * a_even + w_odd * a_odd

    return dot_chunk


@functools.lru_cache(maxsize=None)
def make_kernel(rows: int, unroll: int, warps: int, prologue: str = "none", residual: bool = False):
    """The GEMV for blocks of `warps` warps, each owning `rows` output rows and issuing `unroll`
    16-byte loads per row (and the activations' loads) before it uses any."""
    step = 32 * unroll  # chunks a warp reads per row and pass
    rmsnorm = prologue == "rmsnorm"
    load, dot_chunk = load_activation(prologue), make_dot_chunk(prologue, rows, unroll)
    w_words, x_words = rows * unroll * 4, unroll * 8  # local arrays need sizes fixed before compiling

    @L.kernel(threads=32 * warps)
    def gemv(x, aux, eps, res, weight, out):
        # x: fp16 [K] ([2K] for silu_mul) as int32 pairs; aux: the norm weight, fp16 [K] as int32
        # pairs; res: the residual, fp16 [N] as int16; weight: fp16 [N, K] as int32 [N, K/2]; out: fp16 [N]
        n, words = weight.shape
        chunks = words // 4
        lane = cuda.threadIdx.x % 32
        row0 = (cuda.blockIdx.x * warps + cuda.threadIdx.x // 32) * rows
        acc = cuda.local.array(rows, float32)
        sumsq = cuda.local.array(1, float32)
        wq = cuda.local.array(w_words, uint32)  # [row][slot][word]
        xq = cuda.local.array(x_words, uint32)  # [slot][word]
        for r in range(rows):
            acc[r] = 0
        sumsq[0] = 0
        after = ptx.wait_for_previous_grid()  # x and res may be the previous kernel's output
        for base in range(lane, chunks, step):
            for u in range(unroll):
                c = base + 32 * u
                at = min(c, chunks - 1) + after
                for r in range(rows):
                    w0, w1, w2, w3 = ptx.load_u32x4_once(weight, min(row0 + r, n - 1) * words + 4 * at)
                    i = (r * unroll + u) * 4
                    wq[i], wq[i + 1], wq[i + 2], wq[i + 3] = w0, w1, w2, w3
                load(x, aux, chunks, at, c < chunks, xq, u)
            for u in range(unroll):
                dot_chunk(wq, xq, u, acc, sumsq)
        ptx.allow_next_grid()  # this warp's weights are in: the next kernel may start launching
        scale = float32(1)
        if rmsnorm:
            total = sumsq[0]
            for offset in (16, 8, 4, 2, 1):
                total += ptx.shfl_xor(total, offset)
            scale = float32(1) / math.sqrt(total / float32(2 * words) + eps)
        for r in range(rows):
            total = acc[r]
            for offset in (16, 8, 4, 2, 1):
                total += ptx.shfl_xor(total, offset)
            if lane == 0 and row0 + r < n:
                out[row0 + r] = with_residual(total * scale, res, row0 + r, residual)

    return gemv


def plan(n: int, k: int, prologue: str = "none") -> tuple[int, int, int]:
    """(rows, unroll, warps): one row per warp and 8 chunks in flight per lane where K is a
    multiple of a warp's pass (2,048 weights), else 4 (K = 11008: 8 would waste 5/8 of the
    last pass); two rows per warp with a prologue, so that two rows share each activation it
    computes; two warps per block.

    From the sweep on an H200 (docs/benchmarks.md, "the fp16 GEMV"): 27 tiles on the five
    Llama-2-7B shapes, where the planned tile was the fastest or within 1% of it, 5-26% faster
    than cuBLAS. With a prologue, one row per warp was 7% (RMSNorm) to 45% (SiLU * up) slower
    than the plain GEMV; two rows, 0-11%.
    """
    rows = 1 if prologue == "none" else 2
    unroll = 8 if rows == 1 and k % (32 * MAX_UNROLL * CHUNK) == 0 else 4
    return rows, unroll, 2


def f16_gemv(x: torch.Tensor, weight: torch.Tensor, out: torch.Tensor | None = None,
             tile: tuple[int, int, int] | None = None, *, prologue: str = "none", norm: torch.Tensor | None = None,
             eps: float = 1e-5, residual: torch.Tensor | None = None) -> torch.Tensor:
    """residual + activation(x) @ W.T for a single row x ([K] or [1, K], fp16; [2K] for prologue
    "silu_mul") and an fp16 weight [N, K]: fp16 [..., N].

    `prologue`, `norm`, `eps` and `residual` mean what they mean for `w4a16_gemv`. Needs K % 8
    == 0 and 16-byte aligned contiguous tensors. `tile` = (rows, unroll, warps) overrides `plan`.
    """
    n, k = weight.shape
    L.require(prologue in PROLOGUES, f"f16_gemv: prologue must be one of {PROLOGUES}, got {prologue!r}")
    width = 2 * k if prologue == "silu_mul" else k
    L.require(x.dtype == torch.float16 and x.numel() == width and x.is_contiguous(),
              f"f16_gemv wants a contiguous fp16 x with {width} elements, got {x.dtype} {tuple(x.shape)}")
    L.require(weight.dtype == torch.float16 and k % CHUNK == 0,
              f"f16_gemv needs an fp16 weight with K % {CHUNK} == 0, got {weight.dtype} K={k}")
    L.require((norm is not None) == (prologue == "rmsnorm"), "f16_gemv: pass norm exactly with prologue 'rmsnorm'")
    for t, size in ((norm, k), (residual, n)):
        L.require(t is None or (t.dtype == torch.float16 and t.numel() == size),
                  f"f16_gemv: norm and residual must be fp16 of {k} and {n} elements")
    fused = [t for t in (norm, residual) if t is not None]
    for t in (x, weight, *fused):
        L.require(t.is_contiguous() and t.data_ptr() % 16 == 0, "f16_gemv needs contiguous 16-byte aligned tensors")
    rows, unroll, warps = tile or plan(n, k, prologue)
    L.require(1 <= unroll <= MAX_UNROLL and rows >= 1 and warps >= 1,
              f"f16_gemv: tile (rows, unroll, warps) needs 1 <= unroll <= {MAX_UNROLL}, got {tile}")
    if out is None:
        out = torch.empty(*x.shape[:-1], n, dtype=torch.float16, device=x.device)
    kernel = make_kernel(rows, unroll, warps, prologue, residual is not None)
    flat = lambda t, dtype: t.view(-1).view(dtype)  # noqa: E731
    L.launch(kernel, (-(-n // (rows * warps)),), (32 * warps,), flat(x, torch.int32),
             flat(x if norm is None else norm, torch.int32), np.float32(eps),
             flat(out if residual is None else residual, torch.int16), weight.view(torch.int32), out.view(-1),
             overlap=True)
    return out


def check(n: int = 10, k: int = 600, tile: tuple[int, int, int] | None = (2, 2, 2), seed: int | None = None,
          prologue: str = "none", residual: bool = False) -> float:
    """Run the kernel on fresh random inputs; return the relative error (raises if too large).

    The tolerance is `w4a16_gemv.check`'s: an fp16 dot product accumulated in float32, and for
    the fused prologues one fp16 step at each of the activation's two roundings."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    dev = L.device()
    weight = (torch.randn(n, k, generator=gen) / math.sqrt(k)).half().to(dev)
    width = 2 * k if prologue == "silu_mul" else k
    x = (torch.randn(width, generator=gen) * 2).half().to(dev)
    norm = (torch.rand(k, generator=gen) + 0.5).half().to(dev) if prologue == "rmsnorm" else None
    res = (torch.randn(n, generator=gen) * 4).half().to(dev) if residual else None
    a = activation(x, prologue, norm).double()
    y, abs_y = a @ weight.double().t(), a.abs() @ weight.double().abs().t()
    want = y if res is None else y + res.double()
    out = measure.poisoned((n,), torch.float16, dev)
    f16_gemv(x, weight, out=out, tile=tile, prologue=prologue, norm=norm, residual=res)
    norm2 = lambda t: torch.linalg.vector_norm(t.double().cpu()).item()  # noqa: E731
    flips = 4 * measure.U16 if prologue != "none" else 0.0
    tol = (measure.dot_tolerance(k, want, abs_y) + flips * norm2(abs_y) / norm2(want)
           + (measure.U16 * norm2(y) / norm2(want) if residual else 0.0))
    return measure.assert_close(f"f16_gemv {prologue}{' + residual' if residual else ''} N={n} K={k}", out, want,
                                tol)


def bench(n: int, k: int, tile: tuple[int, int, int] | None = None) -> dict:
    """Time the kernel and cuBLAS (F.linear on the same [N, K] weights) on one layer shape (GPU only)."""
    sets = measure.sets_for(2 * n * k)
    weights = [torch.randn(n, k, device="cuda").half() for _ in range(sets)]
    x = torch.randn(1, k, device="cuda").half()
    out = torch.empty(1, n, device="cuda", dtype=torch.float16)
    us = measure.time_us(lambda i: f16_gemv(x, weights[i], out=out, tile=tile), sets)
    torch_us = measure.time_us(lambda i: torch.matmul(x, weights[i].t(), out=out), sets)
    return {"kernel": "f16_gemv", "shape": f"N={n} K={k}", "us": us, "bytes": 2 * (n * k + k + n),
            "flops": 2 * n * k, "torch_us": torch_us, "tile": list(tile or plan(n, k))}
