"""Quantized KV cache: write new K/V as int8/int4 codes, and attend over them directly.

Decode attention is bound by reading the cache, so a cache of 8-bit codes (plus a 4-byte
scale/zero pair per token and head) reads ~1.9x fewer bytes than fp16, and 4-bit codes
~3.6x fewer. The format is LMDeploy's `quant_policy` 8/4 (docs/internals.md): per token
and per head, asymmetric, x = (q - zero) * scale; int4 packs element 2i in the low nibble.

`write_kv` quantizes in one warp per (token, head): the lanes find min and max with warp
shuffles, then each lane writes its codes. The arithmetic is exactly the torch reference's
(scale and zero rounded to fp16 first, then q = round(x / scale + zero)), so the kernel
and the engine's torch backend store identical codes.

`paged_attention_quant` is the attention kernel of paged_attention.py compiled for 8- or
4-bit elements: a lane loads 8 codes (8 or 4 bytes), and the scale/zero are applied to the
dot product (s * (q.u - z * sum q)) and to the weighted sum of V, not per element.
"""
from __future__ import annotations

import torch
from numba import cuda, float32
from numba.types import float16

from labkit.kernels import launch as L
from labkit.kernels import measure, ptx
from labkit.kernels.paged_attention import NewTokens, attention_tolerance, launch_attention, random_paged, reference

WARPS = 4  # (token, head) rows per block


def quantize_reference(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[..., D] -> (uint8 codes [..., D] or [..., D/2], fp16 [..., 2] (scale, zero)) in torch."""
    qmax = 2**bits - 1
    lo, hi = x.float().aminmax(dim=-1, keepdim=True)
    scale = ((hi - lo) / qmax).clamp(min=1e-6).half()
    zero = (-lo / scale.float()).half()
    q = (x.float() / scale.float() + zero.float()).round().clamp(0, qmax).to(torch.uint8)
    if bits == 4:
        q = q[..., 0::2] | (q[..., 1::2] << 4)
    return q, torch.cat([scale, zero], dim=-1)


def unpack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 codes [..., D] (int8) or [..., D/2] (int4, element 2i in the low nibble) as one code
    per element [..., D]."""
    return torch.stack([codes & 0xF, codes >> 4], dim=-1).flatten(-2) if bits == 4 else codes


def dequantize_cache(codes: torch.Tensor, scale_zero: torch.Tensor, bits: int,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Codes [..., D or D/2] and (scale, zero) [..., 2] back to values [..., D]."""
    codes = unpack_codes(codes, bits)
    return ((codes.float() - scale_zero[..., 1:].float()) * scale_zero[..., :1].float()).to(dtype)


def write_reference(cache: torch.Tensor, scale_zero: torch.Tensor | None, slots: torch.Tensor,
                    x: torch.Tensor, bits: int) -> None:
    """Store new tokens x [T, H_kv, D] at `slots` of a paged cache, in torch."""
    block_size = cache.shape[2]
    blocks, offsets = slots // block_size, slots % block_size
    if bits == 16:
        cache[blocks, :, offsets] = x.to(cache.dtype)
    else:
        codes, pairs = quantize_reference(x, bits)
        cache[blocks, :, offsets] = codes
        scale_zero[blocks, :, offsets] = pairs


@L.kernel(threads=32 * WARPS)
def write_kernel(k_new, v_new, slots, bits, k_cache, v_cache, k_scale_zero, v_scale_zero):
    # k_new/v_new: fp16 [T, H_kv, D]; caches [blocks, H_kv, block_size, D or D/2] (fp16 or uint8);
    # k_scale_zero/v_scale_zero: the (scale, zero) pairs, fp16 [blocks, H_kv, block_size, 2];
    # blockIdx.y picks K (0) or V (1)
    n_tokens, kv_heads, head_dim = k_new.shape
    block_size = k_cache.shape[2]
    row = cuda.blockIdx.x * WARPS + cuda.threadIdx.x // 32
    lane = cuda.threadIdx.x % 32
    src, cache, scale_zero = (k_new, k_cache, k_scale_zero) if cuda.blockIdx.y == 0 else (v_new, v_cache, v_scale_zero)
    token, head = row // kv_heads, row % kv_heads
    if row >= n_tokens * kv_heads:
        token = 0  # idle warps still join the shuffles below; they write nothing
    blk, off = slots[token] // block_size, slots[token] % block_size
    lo, hi = float32(3e38), float32(-3e38)
    for e in range(lane, head_dim, 32):
        v = float32(src[token, head, e])
        lo, hi = min(lo, v), max(hi, v)
    for step in (16, 8, 4, 2, 1):
        lo = min(lo, ptx.shfl_xor(lo, step))
        hi = max(hi, ptx.shfl_xor(hi, step))
    if row < n_tokens * kv_heads:
        if bits == 16:
            for e in range(lane, head_dim, 32):
                cache[blk, head, off, e] = src[token, head, e]
        else:
            qmax = float32(2**bits - 1)
            scale = float32(float16(max((hi - lo) / qmax, float32(1e-6))))
            zero = float32(float16(-lo / scale))
            if lane == 0:
                scale_zero[blk, head, off, 0], scale_zero[blk, head, off, 1] = scale, zero
            for pair in range(lane, head_dim // 2, 32):
                a = min(max(ptx.rint(float32(src[token, head, 2 * pair]) / scale + zero), float32(0)), qmax)
                b = min(max(ptx.rint(float32(src[token, head, 2 * pair + 1]) / scale + zero), float32(0)), qmax)
                if bits == 8:
                    cache[blk, head, off, 2 * pair] = int(a)
                    cache[blk, head, off, 2 * pair + 1] = int(b)
                else:
                    cache[blk, head, off, pair] = int(a) | (int(b) << 4)


def write_kv(k_new: torch.Tensor, v_new: torch.Tensor, slots: torch.Tensor, k_cache: torch.Tensor,
             v_cache: torch.Tensor, k_scale_zero: torch.Tensor | None = None,
             v_scale_zero: torch.Tensor | None = None, bits: int = 16) -> None:
    """Write new tokens' K/V [T, H_kv, D] (fp16) into the paged cache at `slots` (int64 [T]).

    bits=16 copies into fp16 caches; bits=8/4 quantize into uint8 caches and write the
    per-token (scale, zero) pairs. One launch for K and V; capturable.
    """
    n_tokens, kv_heads, head_dim = k_new.shape
    L.require(bits in (16, 8, 4), f"bits must be 16, 8 or 4, got {bits}")
    L.require(k_new.dtype == torch.float16 and v_new.dtype == torch.float16, "write_kv wants fp16 K/V")
    L.require(bits == 16 or (k_scale_zero is not None and v_scale_zero is not None),
              "quantized caches need k_scale_zero and v_scale_zero")
    if n_tokens == 0:
        return
    if bits == 16:  # fp16 caches have no scales: a placeholder of the same type fills those slots
        k_scale_zero = v_scale_zero = L.workspace("kv_quant.no_scales", (1, 1, 1, 2), torch.float16, k_new.device)
    L.launch(write_kernel, (-(-n_tokens * kv_heads // WARPS), 2), (32 * WARPS,), k_new.contiguous(),
             v_new.contiguous(), slots, bits, k_cache, v_cache, k_scale_zero, v_scale_zero)


def paged_attention_quant(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                          k_scale_zero: torch.Tensor, v_scale_zero: torch.Tensor, block_tables: torch.Tensor,
                          context_lens: torch.Tensor, bits: int, scale: float | None = None,
                          max_context_len: int | None = None, out: torch.Tensor | None = None,
                          new: NewTokens | None = None) -> torch.Tensor:
    """Decode attention reading an int8 (bits=8) or int4 (bits=4) paged cache directly.

    Same arguments as `paged_attention.paged_attention`, plus the caches' fp16 (scale, zero)
    tensors [blocks, H_kv, block_size, 2]. `new`: the step's tokens before the rotary embedding
    and not yet cached (`paged_attention.NewTokens`; the kernel quantizes and writes them).
    Tuning knobs: `paged_attention.launch_attention`.
    """
    L.require(bits in (8, 4) and k_cache.dtype == torch.uint8, f"quantized caches are uint8 with bits 8 or 4, got "
              f"{k_cache.dtype}, bits={bits}")
    L.require(new is None or (k_scale_zero.is_contiguous() and v_scale_zero.is_contiguous()),
              "attention that writes new tokens wants contiguous (scale, zero) tensors")
    return launch_attention(q, k_cache, v_cache, block_tables, context_lens, bits=bits,
                            k_scale_zero=k_scale_zero.contiguous(), v_scale_zero=v_scale_zero.contiguous(),
                            scale=scale, max_context_len=max_context_len, out=out, new=new)


def quantized_cache(k: torch.Tensor, v: torch.Tensor, bits: int) -> tuple[torch.Tensor, ...]:
    """(k codes, v codes, k scale/zero, v scale/zero) of whole fp16 caches, by torch."""
    kq, ksz = quantize_reference(k, bits)
    vq, vsz = quantize_reference(v, bits)
    return kq, vq, ksz, vsz


def check_write(bits: int, n_tokens: int = 5, kv_heads: int = 2, head_dim: int = 64, block_size: int = 16,
                seed: int | None = None) -> None:
    """Write fresh tokens at scattered slots; codes and scales must equal torch's exactly."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    dev = L.device()
    blocks = 4
    width = head_dim if bits != 4 else head_dim // 2
    dtype = torch.float16 if bits == 16 else torch.uint8
    slots = torch.randperm(blocks * block_size, generator=gen)[:n_tokens]
    k, v = (torch.randn(n_tokens, kv_heads, head_dim, generator=gen).half() * 3 for _ in range(2))
    shape = (blocks, kv_heads, block_size, width)
    fill = float("nan") if bits == 16 else 0xAB
    want = [torch.full(shape, fill, dtype=dtype) for _ in range(2)]
    pairs_shape = (blocks, kv_heads, block_size, 2)
    scale_zero_want = [torch.full(pairs_shape, float("nan"), dtype=torch.float16) for _ in range(2)]
    for cache, scale_zero, x in zip(want, scale_zero_want, (k, v)):
        write_reference(cache, scale_zero, slots, x, bits)
    got = [torch.full(shape, fill, dtype=dtype, device=dev) for _ in range(2)]
    scale_zero_got = [torch.full(pairs_shape, float("nan"), dtype=torch.float16, device=dev) for _ in range(2)]
    write_kv(k.to(dev), v.to(dev), slots.to(dev), got[0], got[1], scale_zero_got[0], scale_zero_got[1], bits)
    for name, g, w in (("k", got[0], want[0]), ("v", got[1], want[1]),
                       ("k scale/zero", scale_zero_got[0], scale_zero_want[0]),
                       ("v scale/zero", scale_zero_got[1], scale_zero_want[1])):
        if bits == 16 and "scale" in name:
            continue
        same = (g.cpu() == w) | (torch.isnan(g.cpu().float()) & torch.isnan(w.float()))
        if not bool(same.all()):
            raise AssertionError(f"write_kv bits={bits}: {int((~same).sum())} {name} entries differ from torch")


def check(bits: int, lengths: tuple[int, ...] = (3, 37), heads: int = 4, kv_heads: int = 2, head_dim: int = 32,
          block_size: int = 16, partition: int | None = None, warps: int = 2, seed: int | None = None) -> float:
    """Attention over a freshly quantized random cache against torch on the dequantized cache."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    k, v, tables, lens = random_paged(len(lengths), list(lengths), kv_heads, head_dim, block_size, gen)
    kq, vq, ksz, vsz = quantized_cache(k, v, bits)
    q = torch.randn(len(lengths), heads, head_dim, generator=gen).half()
    want = reference(q, dequantize_cache(kq, ksz, bits, torch.float64), dequantize_cache(vq, vsz, bits, torch.float64),
                     tables, lens, dtype=torch.float64)
    dev = L.device()
    out = measure.poisoned(tuple(q.shape), torch.float16, dev)
    launch_attention(q.to(dev), kq.to(dev), vq.to(dev), tables.to(dev), lens.to(dev), bits=bits,
                     k_scale_zero=ksz.to(dev), v_scale_zero=vsz.to(dev), out=out, partition=partition, warps=warps)
    return measure.assert_close(f"paged_attention_quant bits={bits} lengths={lengths}", out, want,
                                attention_tolerance(head_dim, max(lengths)))


def rotate_reference(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, heads, D] fp16 rotated by cos/sin [B, D] (the model's apply_rope), computed in float64
    and rounded to fp16 once."""
    half = x.shape[-1] // 2
    xd, c, s = x.double(), cos.double()[:, None], sin.double()[:, None]
    return (xd * c + torch.cat([-xd[..., half:], xd[..., :half]], -1) * s).half()


def check_new_tokens(bits: int, lengths: tuple[int, ...] = (1, 17, 40), heads: int = 4, kv_heads: int = 2,
                     head_dim: int = 32, block_size: int = 16, partition: int | None = 16, warps: int = 2,
                     seed: int | None = None) -> float:
    """Attention that rotates q and the new K and writes the new K/V itself (`NewTokens`),
    against torch: rotate, write (`write_reference`), then attend. The new tokens' rows of the
    cache start as garbage (the kernel must not read them) and must hold what torch writes
    (codes within one step: the rotated K may round differently by an ulp); no other row may
    change. Returns the output's relative error (raises if too large)."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    batch = len(lengths)
    k16, v16, tables, lens = random_paged(batch, list(lengths), kv_heads, head_dim, block_size, gen)
    caches = [k16, v16] if bits == 16 else list(quantized_cache(k16, v16, bits))
    pos = lens.long() - 1
    slots = tables[torch.arange(batch), pos // block_size].long() * block_size + pos % block_size
    blocks, offsets = slots // block_size, slots % block_size
    for c in caches[:2]:  # the new tokens' rows: garbage, to be overwritten
        c[blocks, :, offsets] = float("nan") if bits == 16 else 0xAB
    for c in caches[2:]:
        c[blocks, :, offsets] = float("nan")
    q = torch.randn(batch, heads, head_dim, generator=gen).half()
    k_new, v_new = (torch.randn(batch, kv_heads, head_dim, generator=gen).half() * 3 for _ in range(2))
    inv_freq = 10000.0 ** -(torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = pos[:, None].double() * inv_freq
    cos, sin = (torch.cat([f(angles)] * 2, -1).half() for f in (torch.cos, torch.sin))

    want_caches = [c.clone() for c in caches]
    pairs = want_caches[2:] or [None, None]
    for cache, scale_zero, x in zip(want_caches[:2], pairs, (rotate_reference(k_new, cos, sin), v_new)):
        write_reference(cache, scale_zero, slots, x, bits)
    kd, vd = want_caches[:2] if bits == 16 else (dequantize_cache(want_caches[0], want_caches[2], bits, torch.float64),
                                                  dequantize_cache(want_caches[1], want_caches[3], bits, torch.float64))
    want = reference(rotate_reference(q, cos, sin), kd, vd, tables, lens, dtype=torch.float64)

    dev = L.device()
    got_caches = [c.to(dev) for c in caches]
    out = measure.poisoned(tuple(q.shape), torch.float16, dev)
    new = NewTokens(k_new.to(dev), v_new.to(dev), cos.to(dev), sin.to(dev), slots.to(dev))
    sz = {} if bits == 16 else {"k_scale_zero": got_caches[2], "v_scale_zero": got_caches[3]}
    launch_attention(q.to(dev), got_caches[0], got_caches[1], tables.to(dev), lens.to(dev), bits=bits, out=out,
                     partition=partition, warps=warps, new=new, **sz)
    for name, g, w in zip(("k", "v", "k scale/zero", "v scale/zero"), got_caches, want_caches):
        g = g.cpu()
        if bits != 16 and "scale" not in name:
            g, w = unpack_codes(g, bits), unpack_codes(w, bits)
        diff = (g.float() - w.float()).abs()
        if bits == 16:  # fp16 rows: V copied exactly, the rotated K within an ulp
            close = diff == 0 if name == "v" else diff <= 2 * measure.U16 * w.float().abs()
        elif "scale" in name:
            close = diff <= 4 * measure.U16 * w.float().abs()
        else:  # codes: within one step
            close = diff <= 1
        if not bool(close.all()):
            raise AssertionError(f"attention with new tokens, bits={bits}: {int((~close).sum())} {name} entries "
                                 f"differ from torch's write")
    # q and the new K rounded to fp16 after rotating: up to an ulp apart from torch's, which moves
    # each score by ~2 u16 |score|
    return measure.assert_close(f"attention with new tokens bits={bits} lengths={lengths} H={heads}/{kv_heads}",
                                out, want, attention_tolerance(head_dim, max(lengths)) + 4 * measure.U16)


def bench(batch: int, context: int, bits: int, heads: int = 32, kv_heads: int = 32, head_dim: int = 128,
          block_size: int = 16) -> dict:
    """Time attention over an int8/int4 cache (GPU only)."""
    from labkit.kernels.paged_attention import bench_cache

    k, v, tables, lens = bench_cache(batch, context, kv_heads, head_dim, block_size)
    kq, vq, ksz, vsz = quantized_cache(k, v, bits)
    del k, v
    q = torch.randn(batch, heads, head_dim, device="cuda", dtype=torch.float16)
    out = torch.empty_like(q)
    us = measure.time_us(lambda i: paged_attention_quant(q, kq, vq, ksz, vsz, tables, lens, bits,
                                                         max_context_len=context, out=out), 1, calls=5, repeats=9)
    code_bytes = 2 * batch * context * kv_heads * (head_dim * bits // 8 + 4)
    return {"kernel": f"paged_attention_int{bits}", "shape": f"B={batch} ctx={context} H={heads}/{kv_heads} "
            f"D={head_dim}", "us": us, "bytes": code_bytes + 4 * q.numel(),
            "flops": 4 * batch * heads * context * head_dim}
