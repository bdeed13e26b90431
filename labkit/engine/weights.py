"""Lower-precision weights at load time, for speed: `LLM(..., weights="bf16" | "int8" | "int4")`.

On a GPU, int8/int4 become `labkit.quant.QuantLinear` layers (RTN, int4 in groups of 128, the
AutoAWQ layout) run by the chosen backend's kernels (W4A16 / W8A16). On a CPU they become
`PackedLinear` layers on PyTorch's own packed CPU kernels, described below.

CPU decoding:
Decoding one token reads every weight once: 540 MB per token for the embedded model in
float32, so a CPU's memory bandwidth, not its arithmetic, sets the speed. Fewer bytes per
weight is the lever: bfloat16 halves them, int8 weight-only quarters them, int4 weight-only
(asymmetric, groups of 32) cuts them by 7x. The embedded model was shipped as 4-bit with
groups of 32 (GGUF Q4_1), so int4 at group 32 brings back nearly the very weights that
llama.cpp runs. Activations stay in bfloat16 (this is weight-only quantization).

Those kernels are built for few rows (decoding); a prefill of hundreds of tokens is
compute-bound and runs faster as a plain bfloat16 matmul, so each layer also keeps a
bfloat16 copy of its (dequantized) weight for batches of more than `DENSE_ROWS` rows, as a
GPU dispatcher switches from GEMV to GEMM: more memory, both phases fast.

`torch._weight_int4pack_mm_for_cpu` dequantizes w = (q - 8) * scale + zero per group;
our asymmetric RTN gives w = q * scale + lo, so zero = lo + 8 * scale.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from labkit.models.llama import Llama, linear_layers, rope_frequencies

FORMATS = ("bf16", "int8", "int4")
DENSE_ROWS = 16


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
            q = (w / scale[:, None]).round()
            self.register_buffer("qweight", q.to(torch.int8))
            self.register_buffer("scales", scale.bfloat16())
            dense = q * self.scales.float()[:, None]
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
            sz = self.scales_zeros.float().transpose(0, 1)              # what the kernel computes with
            dense = ((q - 8) * sz[..., :1] + sz[..., 1:]).view_as(w)
        else:
            raise ValueError(f"bits must be 8 or 4, got {bits}")
        self.register_buffer("dense", dense.bfloat16(), persistent=False)   # for prefill-sized batches

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if flat.dtype != torch.bfloat16:   # a check, not a call: a no-op .to() costs a dispatch per layer
            flat = flat.bfloat16()
        if flat.shape[0] > DENSE_ROWS:
            y = F.linear(flat, self.dense)
        elif self.bits == 8:
            y = torch._weight_int8pack_mm(flat, self.qweight, self.scales)
        else:
            y = torch._weight_int4pack_mm_for_cpu(flat, self.qweight, self.group_size, self.scales_zeros)
        if self.bias is not None:
            y = y + self.bias
        y = y.view(*x.shape[:-1], self.out_features)
        return y if y.dtype == x.dtype else y.to(x.dtype)


def convert(model: Llama, weights: str, backend: str = "torch") -> Llama:
    """Swap every linear layer (the vocabulary projection included: the largest one) for its
    `weights` format. In place; returns the model."""
    if weights not in FORMATS:
        raise ValueError(f"weights must be one of {FORMATS}, got {weights!r}")
    device = model.model.embed_tokens.weight.device
    layers = list(linear_layers(model, include_head=True))
    if device.type == "cuda":
        if weights == "bf16":
            return model.to(torch.bfloat16)
        from labkit.quant.qlinear import QuantLinear

        bits = 8 if weights == "int8" else 4
        for name, parent, attr in layers:
            setattr(parent, attr, QuantLinear.from_linear(getattr(parent, attr), bits, 128 if bits == 4 else -1,
                                                          backend=backend))
        return model
    if weights != "bf16":
        bits = 8 if weights == "int8" else 4
        packed = {name: PackedLinear(getattr(parent, attr), bits) for name, parent, attr in layers}
        for name, parent, attr in layers:
            setattr(parent, attr, packed[name])
    model = model.to(torch.bfloat16)
    model.inv_freq = rope_frequencies(model.config)   # rotary angles stay float32: bf16 positions drift
    return model
