"""Lower-precision weights for decoding on a CPU, on PyTorch's own packed CPU kernels.

Decoding one token reads every weight once: 540 MB per token for the embedded model in
float32, so a CPU's memory bandwidth, not its arithmetic, sets the speed. Fewer bytes per
weight is the lever: bfloat16 halves them, int8 weight-only quarters them, int4 weight-only
(asymmetric, groups of 32) cuts them by 7x. The embedded model was shipped as 4-bit with
groups of 32 (GGUF Q4_1), so int4 at group 32 brings back nearly the very weights that
llama.cpp runs. Activations stay in bfloat16 (this is weight-only quantization).

`torch._weight_int4pack_mm_for_cpu` dequantizes w = (q - 8) * scale + zero per group;
our asymmetric RTN gives w = q * scale + lo, so zero = lo + 8 * scale.
"""
from __future__ import annotations

import torch
from torch import nn

from labkit.models.llama import Llama, linear_layers, rope_frequencies

FORMATS = ("bf16", "int8", "int4")


class PackedLinear(nn.Module):
    """y = x @ W.T (+ b) with W stored as int8 (per output channel) or int4 (groups of `group_size`)."""

    def __init__(self, linear: nn.Linear, bits: int, group_size: int = 32):
        super().__init__()
        w = linear.weight.detach().float()
        self.out_features, self.in_features = w.shape
        self.bits, self.group_size = bits, group_size
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().bfloat16(), requires_grad=False)
        if bits == 8:
            scale = w.abs().amax(1).clamp(min=1e-8) / 127
            self.register_buffer("qweight", (w / scale[:, None]).round().to(torch.int8))
            self.register_buffer("scales", scale.bfloat16())
        elif bits == 4:
            if self.in_features % group_size:
                raise ValueError(f"in_features {self.in_features} is not a multiple of the group size {group_size}")
            g = w.view(self.out_features, -1, group_size)
            lo, hi = g.amin(-1), g.amax(-1)
            scale = ((hi - lo) / 15).clamp(min=1e-8)
            q = ((g - lo[..., None]) / scale[..., None]).round().clamp(0, 15).to(torch.int32)
            self.register_buffer("qweight", torch._convert_weight_to_int4pack_for_cpu(q.view_as(w), 1))
            self.register_buffer("scales_zeros", torch.stack([scale, lo + 8 * scale], -1).transpose(0, 1)
                                 .contiguous().bfloat16())     # [K / g, N, 2]
        else:
            raise ValueError(f"bits must be 8 or 4, got {bits}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        if self.bits == 8:
            y = torch._weight_int8pack_mm(flat, self.qweight, self.scales)
        else:
            y = torch._weight_int4pack_mm_for_cpu(flat, self.qweight, self.group_size, self.scales_zeros)
        if self.bias is not None:
            y = y + self.bias
        return y.view(*x.shape[:-1], self.out_features)


def convert(model: Llama, weights: str) -> Llama:
    """Cast the model to bfloat16 and, for int8/int4, swap every linear layer (the vocabulary
    projection included: the largest one) for a `PackedLinear`. In place; returns the model."""
    if weights not in FORMATS:
        raise ValueError(f"weights must be one of {FORMATS}, got {weights!r}")
    if model.model.embed_tokens.weight.device.type != "cpu":
        raise ValueError("these packed weights are for CPU decoding; on a GPU use labkit.quant's QuantLinear")
    layers = list(linear_layers(model, include_head=True))
    if weights != "bf16":
        bits = 8 if weights == "int8" else 4
        packed = {name: PackedLinear(getattr(parent, attr), bits) for name, parent, attr in layers}
        for name, parent, attr in layers:
            setattr(parent, attr, packed[name])
    model = model.to(torch.bfloat16)
    model.inv_freq = rope_frequencies(model.config)   # rotary angles stay float32: bf16 positions drift
    return model
