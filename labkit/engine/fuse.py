"""Merge the projections that read the same input into one matmul.

q, k and v all read the normed hidden state, and so do the MLP's gate and up. Stacking their
weights ([N_q + N_k + N_v, K], [2F, K]) leaves the bytes read per token unchanged but turns
seven matmuls per layer into four: fewer launches, and wider ones, which a decode step at
batch 1 needs (a GEMV spreads N over the GPU's SMs, and N = 4096 alone does not fill them:
the W4A16 GEMV streams a smaller share of the copy bandwidth at N = 4096 than at N = 12288,
docs/benchmarks.md).
vLLM and nano-vllm load checkpoints straight into such merged layers; labkit keeps the
model's own layers for reading and merges them when the engine takes the model.
"""
from __future__ import annotations

import torch
from torch import nn

from labkit.models.llama import Llama


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
