"""Merge the projections that read the same input into one matmul, and (at batch 1 on a GPU)
the element-wise work around each matmul into it.

q, k and v all read the normed hidden state, and so do the MLP's gate and up. Stacking their
weights ([N_q + N_k + N_v, K], [2F, K]) leaves the bytes read per token unchanged but turns
seven matmuls per layer into four: fewer launches, and wider ones, which a decode step at
batch 1 needs (a GEMV spreads N over the GPU's SMs, and N = 4096 alone does not fill them:
the W4A16 GEMV streams a smaller share of the copy bandwidth at N = 4096 than at N = 12288,
docs/benchmarks.md).
vLLM and nano-vllm load checkpoints straight into such merged layers; labkit keeps the
model's own layers for reading and merges them when the engine takes the model.

A decode step at batch 1 is a chain of small kernels, each paying a fixed launch, ramp and
drain (10 per layer with int4 weights, docs/benchmarks.md). Three of a layer's ten are
element-wise work the neighbouring GEMVs can do on the fly: the two RMSNorm + residual
kernels (the GEMVs of q/k/v and of gate/up normalize the row they read, the o and down GEMVs
add the residual as they write) and SiLU(gate) * up (the down projection's GEMV reads the
merged gate/up output). `FusedDecoderLayer` runs a layer that way when its step has one row,
and as the model does otherwise: 7 kernels per layer instead of 10. Int4 layers go through the
W4A16 GEMV (`ops.fused_gemv`), fp16 layers through labkit's fp16 GEMV (`ops.f16_gemv`), which
also streams the weights faster than cuBLAS does at one row (5-26% on the Llama-2-7B shapes
of an H200). `fuse_decode_layers` swaps it in where the layers' formats allow; the engine's
runner asks for it on a GPU with the numba backend while `fused_decode()` is on (the default,
as it measured faster for both formats: docs/benchmarks.md; `LABKIT_FUSED_DECODE=0` or
`set_fused_decode(False)` turns it off).
"""
from __future__ import annotations

import os

import torch
from torch import nn

from labkit.engine import ops
from labkit.models.llama import DecoderLayer, Llama


def concat_linears(parts: list[nn.Module]) -> nn.Module:
    """One layer whose output is the outputs of `parts` side by side."""
    from labkit.quant.qlinear import QuantLinear

    if all(isinstance(m, QuantLinear) for m in parts):
        return QuantLinear.concat(parts)
    if not all(type(m) is nn.Linear for m in parts):
        raise TypeError(f"cannot merge layers of types {sorted({type(m).__name__ for m in parts})}")
    first = parts[0]
    merged = nn.Linear(first.in_features, sum(m.out_features for m in parts), bias=first.bias is not None,
                       device=first.weight.device, dtype=first.weight.dtype)
    with torch.no_grad():
        merged.weight.copy_(torch.cat([m.weight for m in parts]))
        if first.bias is not None:
            merged.bias.copy_(torch.cat([m.bias for m in parts]))
    return merged.requires_grad_(False)


def fuse_projections(model: Llama) -> Llama:
    """Merge every layer's q/k/v and gate/up projections (the model's `merge_qkv`,
    `merge_gate_up`; the separate layers' memory is freed). In place; returns the model.
    Layers that cannot be merged (of different kinds or formats) stay apart."""
    for layer in model.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        if attn.qkv_proj is None and (merged := _merge([attn.q_proj, attn.k_proj, attn.v_proj])) is not None:
            attn.merge_qkv(merged)
        if mlp.gate_up_proj is None and (merged := _merge([mlp.gate_proj, mlp.up_proj])) is not None:
            mlp.merge_gate_up(merged)
    return model


def _merge(parts: list[nn.Module]) -> nn.Module | None:
    try:
        return concat_linears(parts)
    except (TypeError, ValueError):
        return None


_fused = {"wanted": os.environ.get("LABKIT_FUSED_DECODE", "1") != "0"}


def fused_decode() -> bool:
    """Whether engines built from now on fuse their decode layers (`fuse_decode_layers`)."""
    return _fused["wanted"]


def set_fused_decode(wanted: bool) -> bool:
    """Turn the fused decode layers on or off for engines built from now on; returns the previous wish."""
    previous, _fused["wanted"] = _fused["wanted"], wanted
    return previous


class FusedDecoderLayer(DecoderLayer):
    """A decoder layer (the same modules, the same weights) whose one-row steps run as four GEMVs
    with the norms, SiLU * up and the residual adds inside them (`ops.fused_gemv` for int4
    weights, `ops.f16_gemv` for fp16)."""

    def __init__(self, layer: DecoderLayer):
        nn.Module.__init__(self)
        self.input_layernorm, self.self_attn = layer.input_layernorm, layer.self_attn
        self.post_attention_layernorm, self.mlp = layer.post_attention_layernorm, layer.mlp

    def forward(self, x, cos, sin, cache):
        if x.shape[0] * x.shape[1] != 1:
            return super().forward(x, cos, sin, cache)
        attn, mlp = self.self_attn, self.mlp
        qkv = _gemv(x, attn.qkv_proj, "rmsnorm", self.input_layernorm)
        x = _gemv(attn.attend(*attn.split_qkv(qkv), cos, sin, cache), attn.o_proj, residual=x)
        gate_up = _gemv(x, mlp.gate_up_proj, "rmsnorm", self.post_attention_layernorm)
        return _gemv(gate_up, mlp.down_proj, "silu_mul", residual=x)


def _gemv(x: torch.Tensor, layer: nn.Module, prologue: str = "none", norm: nn.Module | None = None,
          residual: torch.Tensor | None = None) -> torch.Tensor:
    """residual + layer(prologue(x)) in one kernel: the W4A16 GEMV for an int4 `QuantLinear`, the
    fp16 GEMV for an fp16 `nn.Linear` (the bias added after)."""
    from labkit.quant.qlinear import QuantLinear

    weight, eps = None if norm is None else norm.weight, 1e-5 if norm is None else float(norm.eps)
    if isinstance(layer, QuantLinear):
        y = ops.fused_gemv(x, layer.qweight, layer.qzeros, layer.scales, layer.group_size, prologue, weight, eps,
                           residual)
    else:
        y = ops.f16_gemv(x, layer.weight, prologue, weight, eps, residual)
    return y if layer.bias is None else y + layer.bias.to(y.dtype)


def fuse_decode_layers(model: Llama) -> Llama:
    """Make every layer whose format allows it a `FusedDecoderLayer` (in place; returns the model):
    merged q/k/v and gate/up, all four either int4 numba `QuantLinear`s the W4A16 GEMV takes
    (N % 32 == 0, no padded K) or fp16 `nn.Linear`s (K % 8 == 0), no bias on o and down, and fp16
    norms. Other layers stay as they are."""
    layers = model.model.layers
    for i, layer in enumerate(layers):
        if type(layer) is DecoderLayer and _fusable(layer):
            layers[i] = FusedDecoderLayer(layer)
    return model


def _fusable(layer: DecoderLayer) -> bool:
    from labkit.quant.qlinear import QuantLinear

    attn, mlp = layer.self_attn, layer.mlp
    linears = [attn.qkv_proj, attn.o_proj, mlp.gate_up_proj, mlp.down_proj]
    int4 = all(isinstance(m, QuantLinear) and m.bits == 4 and m.act_bits == 16 and m.backend == "numba"
               and m.padded_in == m.in_features and m.out_features % 32 == 0 and m.group_size % 8 == 0
               for m in linears)
    fp16 = all(type(m) is nn.Linear and m.weight.dtype == torch.float16 and m.in_features % 8 == 0 for m in linears)
    norms_ok = all(n.weight.dtype == torch.float16 for n in (layer.input_layernorm, layer.post_attention_layernorm))
    return (int4 or fp16) and norms_ok and attn.o_proj.bias is None and mlp.down_proj.bias is None
