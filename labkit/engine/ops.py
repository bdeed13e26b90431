"""The numba kernels as PyTorch custom operators, so `torch.compile` can see through a step.

Without them, TorchDynamo stops at every Numba launch (it cannot trace into Numba) and the
model is cut into hundreds of small compiled pieces. As custom ops with a "fake" (shape only)
implementation, the kernels become opaque nodes of one graph: Inductor fuses the small
element-wise operations around them (RMSNorm, rotary embedding, SiLU * up, residual adds)
into a few kernels per layer, which matters at batch 1, where a decode step on a GPU is
otherwise hundreds of 2-3 microsecond kernels.

Only the compiler gets the op: called eagerly, a Python custom op costs far more host time
per call than the kernel it launches (most of an eager prefill step's time), so `write_kv`,
`paged_attention`, `rope_attention`, `quant_linear` and `fused_gemv` below launch the
kernel directly unless `torch.compile` is tracing.

`rope_attention` is decode attention with the rotary embedding of q and the new K, and the
write of the new K/V into the cache, inside the kernel (`labkit.kernels.paged_attention.NewTokens`):
a decode step's two small kernels per layer before attention, gone.

`fused_gemv` is the W4A16 GEMV with the element-wise work around it inside (an RMSNorm or
SiLU(gate) * up before, the residual add after: `labkit.kernels.w4a16_gemv`), and `f16_gemv`
its fp16 twin (`labkit.kernels.f16_gemv`), which the fused decoder layers of
`labkit.engine.fuse` call at one row per step: there Inductor's fusions still leave a kernel
of their own between the matmuls, and the GEMV can absorb it.
"""
from __future__ import annotations

import torch
from torch import nn


def _write_kv(k: torch.Tensor, v: torch.Tensor, slots: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
              k_scale_zero: torch.Tensor, v_scale_zero: torch.Tensor, bits: int) -> None:
    from labkit.kernels.kv_quant import write_kv as launch

    launch(k, v, slots, k_cache, v_cache, k_scale_zero, v_scale_zero, bits)


def _paged_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, k_scale_zero: torch.Tensor,
                     v_scale_zero: torch.Tensor, block_tables: torch.Tensor, context_lens: torch.Tensor, bits: int,
                     max_context: int) -> torch.Tensor:
    return _attention(q, k_cache, v_cache, k_scale_zero, v_scale_zero, block_tables, context_lens, bits, max_context)


def _rope_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                    slots: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, k_scale_zero: torch.Tensor,
                    v_scale_zero: torch.Tensor, block_tables: torch.Tensor, context_lens: torch.Tensor, bits: int,
                    max_context: int) -> torch.Tensor:
    from labkit.kernels.paged_attention import NewTokens

    return _attention(q, k_cache, v_cache, k_scale_zero, v_scale_zero, block_tables, context_lens, bits, max_context,
                      NewTokens(k, v, cos, sin, slots))


def _attention(q, k_cache, v_cache, k_scale_zero, v_scale_zero, block_tables, context_lens, bits, max_context,
               new=None) -> torch.Tensor:
    from labkit.kernels.kv_quant import paged_attention_quant
    from labkit.kernels.paged_attention import paged_attention as fp16

    if bits == 16:
        return fp16(q, k_cache, v_cache, block_tables, context_lens, max_context_len=max_context, new=new)
    return paged_attention_quant(q, k_cache, v_cache, k_scale_zero, v_scale_zero, block_tables, context_lens, bits=bits,
                                 max_context_len=max_context, new=new)


def _quant_linear(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, bits: int,
                  group_size: int) -> torch.Tensor:
    from labkit.quant.qlinear import numba_kernel

    return numba_kernel(x, qweight, qzeros, scales, bits, group_size)


def _fused_gemv(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group_size: int,
                prologue: str, norm: torch.Tensor | None, eps: float, residual: torch.Tensor | None) -> torch.Tensor:
    from labkit.kernels.w4a16_gemv import w4a16_gemv

    return w4a16_gemv(x.contiguous(), qweight, qzeros, scales, group_size, prologue=prologue, norm=norm, eps=eps,
                      residual=None if residual is None else residual.contiguous())


def _f16_gemv(x: torch.Tensor, weight: torch.Tensor, prologue: str, norm: torch.Tensor | None, eps: float,
              residual: torch.Tensor | None) -> torch.Tensor:
    from labkit.kernels.f16_gemv import f16_gemv

    return f16_gemv(x.contiguous(), weight, prologue=prologue, norm=norm, eps=eps,
                    residual=None if residual is None else residual.contiguous())


write_kv_op = torch.library.custom_op("labkit::write_kv", _write_kv,
                                      mutates_args=("k_cache", "v_cache", "k_scale_zero", "v_scale_zero"))
paged_attention_op = torch.library.custom_op("labkit::paged_attention", _paged_attention, mutates_args=())
rope_attention_op = torch.library.custom_op("labkit::rope_attention", _rope_attention,
                                            mutates_args=("k_cache", "v_cache", "k_scale_zero", "v_scale_zero"))
quant_linear_op = torch.library.custom_op("labkit::quant_linear", _quant_linear, mutates_args=())
fused_gemv_op = torch.library.custom_op("labkit::fused_gemv", _fused_gemv, mutates_args=())
f16_gemv_op = torch.library.custom_op("labkit::f16_gemv", _f16_gemv, mutates_args=())


@write_kv_op.register_fake
def _(k, v, slots, k_cache, v_cache, k_scale_zero, v_scale_zero, bits):
    return None


@paged_attention_op.register_fake
def _(q, k_cache, v_cache, k_scale_zero, v_scale_zero, block_tables, context_lens, bits, max_context):
    return torch.empty_like(q)


@rope_attention_op.register_fake
def _(q, k, v, cos, sin, slots, k_cache, v_cache, k_scale_zero, v_scale_zero, block_tables, context_lens, bits,
      max_context):
    return torch.empty_like(q)


@quant_linear_op.register_fake
def _(x, qweight, qzeros, scales, bits, group_size):
    n = scales.shape[1] if bits == 4 else qweight.shape[0]
    return x.new_empty(*x.shape[:-1], n)


@fused_gemv_op.register_fake
def _(x, qweight, qzeros, scales, group_size, prologue, norm, eps, residual):
    return x.new_empty(*x.shape[:-1], scales.shape[1])


@f16_gemv_op.register_fake
def _(x, weight, prologue, norm, eps, residual):
    return x.new_empty(*x.shape[:-1], weight.shape[0])


def write_kv(*args) -> None:
    """Write a step's K/V into the paged cache (fp16, or int8/int4 codes): `_write_kv`'s arguments."""
    (write_kv_op if torch.compiler.is_compiling() else _write_kv)(*args)


def paged_attention(*args) -> torch.Tensor:
    """Decode attention over the paged cache: `_paged_attention`'s arguments."""
    return (paged_attention_op if torch.compiler.is_compiling() else _paged_attention)(*args)


def rope_attention(*args) -> torch.Tensor:
    """Decode attention that rotates q and the new K and writes the new K/V itself: `_rope_attention`'s arguments."""
    return (rope_attention_op if torch.compiler.is_compiling() else _rope_attention)(*args)


def quant_linear(*args) -> torch.Tensor:
    """A quantized linear layer through `labkit.kernels.dispatch`: `_quant_linear`'s arguments."""
    return (quant_linear_op if torch.compiler.is_compiling() else _quant_linear)(*args)


def fused_gemv(*args) -> torch.Tensor:
    """One row through an int4 layer with its prologue and residual fused in: `_fused_gemv`'s arguments."""
    return (fused_gemv_op if torch.compiler.is_compiling() else _fused_gemv)(*args)


def f16_gemv(*args) -> torch.Tensor:
    """One row through an fp16 layer with its prologue and residual fused in: `_f16_gemv`'s arguments."""
    return (f16_gemv_op if torch.compiler.is_compiling() else _f16_gemv)(*args)


def route_quant_linears(model: nn.Module) -> None:
    """Make every numba-backed `QuantLinear` call its kernel through `quant_linear` (the custom op
    while compiling)."""
    from labkit.quant.qlinear import QuantLinear

    for module in model.modules():
        if isinstance(module, QuantLinear) and module.backend == "numba" and module.act_bits == 16:
            module.set_kernel(quant_linear)
