"""The weights the engine computes with: `LLM(..., weights="fp32" | "bf16" | "int8" | "int4")`.

A full-precision model can be converted at load time (RTN, as LMDeploy quantizes at load
time); a quantized checkpoint (a `labkit lite` output) runs as it was stored.

- On a GPU, int8/int4 become `labkit.quant.QuantLinear` layers (int4 in groups of 128, the
  AutoAWQ layout) run by the chosen backend's kernels (W4A16 / W8A16).
- On a CPU, quantized layers, a checkpoint's or the RTN ones, become
  `labkit.quant.cpu.PackedLinear` layers on PyTorch's packed CPU kernels, and the rest of the
  model runs in bfloat16. RTN int4 uses groups of 32 there: the embedded model was shipped
  as 4-bit in groups of 32 (GGUF Q4_1), so that brings back nearly the weights llama.cpp runs.

The vocabulary projection (the largest layer of a small model) is converted along with the
others when `weights` asks for it. A checkpoint's float head stays float on a GPU; on a CPU
it becomes int8, W8A8 when a tokenizer gives calibration text (`labkit.quant.cpu.int8_head`).

A full-precision model is served as stored by default (float32 on a CPU), not in bfloat16:
on the embedded model bfloat16 costs about what int8 weights do (KL and top-1 agreement in
docs/benchmarks.md), which is measurable, so it is a choice (`weights="bf16"`), not a default.
"""
from __future__ import annotations

import torch
from torch import nn

from labkit.models.llama import Llama, linear_layers

FORMATS = ("fp32", "bf16", "int8", "int4")
CPU_INT4_GROUP = 32
GPU_INT4_GROUP = 128


def is_quantized(model: nn.Module) -> bool:
    from labkit.quant.cpu import PackedLinear
    from labkit.quant.qlinear import QuantLinear

    return any(isinstance(m, (QuantLinear, PackedLinear)) for m in model.modules())


def convert(model: Llama, weights: str | None, backend: str = "torch", tokenizer=None) -> Llama:
    """Give `model` the `weights` format (None: as it is; a quantized model on a CPU is
    repacked for the CPU kernels, its float head made W8A8 with scales measured on the
    calibration text when `tokenizer` is given). In place; returns the model."""
    if weights is not None and weights not in FORMATS:
        raise ValueError(f"weights must be one of {FORMATS}, got {weights!r}")
    on_gpu = model.model.embed_tokens.weight.device.type == "cuda"
    if is_quantized(model):
        if weights is not None:
            raise ValueError(f"the model is a quantized checkpoint already; weights={weights!r} "
                             "applies to full-precision models")
        if not on_gpu and backend == "torch":
            from labkit.quant.calib import calibration_ids
            from labkit.quant.cpu import pack_model

            pack_model(model, None if tokenizer is None else calibration_ids(tokenizer, n_samples=1, seqlen=512))
        return model
    if weights in (None, "fp32", "bf16"):
        return model if weights is None else _cast(model, torch.float32 if weights == "fp32" else torch.bfloat16)
    bits = 8 if weights == "int8" else 4
    layers = list(linear_layers(model, include_head=True))
    if on_gpu:
        from labkit.quant.qlinear import QuantLinear

        for _, parent, attr in layers:
            setattr(parent, attr, QuantLinear.from_linear(getattr(parent, attr), bits, GPU_INT4_GROUP if bits == 4 else -1,
                                                          backend=backend))
        return model
    from labkit.quant.cpu import PackedLinear, pack_model

    group = CPU_INT4_GROUP if bits == 4 else -1
    packed = {name: PackedLinear.from_linear(getattr(parent, attr), bits, group) for name, parent, attr in layers}
    for name, parent, attr in layers:   # a tied head shares the embedding: swap only once all are packed
        setattr(parent, attr, packed[name])
    return pack_model(model)


def _cast(model: Llama, dtype: torch.dtype) -> Llama:
    """Parameters to `dtype`; buffers (the rotary angles: float32) stay as they are."""
    for p in model.parameters():
        p.data = p.data.to(dtype)
    return model
