"""Quantized linear layers on PyTorch's packed CPU kernels: what a quantized model runs on a CPU.

Decoding one token reads every weight once, so on a CPU memory bandwidth, not arithmetic,
sets the speed, and fewer bytes per weight is the lever. A CPU has no int4 matmul units,
but PyTorch ships two weight-only kernels that read the packed codes and dequantize in
registers: `torch._weight_int4pack_mm_for_cpu` (int4 in groups, ~7x fewer bytes than
float32) and `torch._weight_int8pack_mm` (int8 per output channel, ~4x). `PackedLinear`
holds a layer in their format; `pack_model` repacks a model's `QuantLinear` layers into it
once, at load time, so a learner's own AWQ (or RTN) codes are what runs, not a second
quantization of the weights.

The int4 kernel dequantizes `w = (q - 8) * scale + zero` per group. AWQ's layout stores
`w = (q - z) * s` with an integer zero point z, so `scale = s` and `zero = (8 - z) * s`:
the same weights, exactly as far as the activations' dtype holds s (bfloat16: 8 bits of
mantissa, against float16's 11 in the checkpoint).

The kernel takes groups of 32, 64, 128 or 256 that divide the input size. A group of g
is also two groups of g / 2 with the same scale and zero, so a checkpoint whose groups do
not divide K (group 128 on SmolLM2's 576, stored zero-padded to 640, see
`labkit.quant.qlinear`) runs at the largest kernel group dividing both (64 there), without
padding the activations. Padded columns are dropped: their weights and inputs are zero.

Activations run in bfloat16, where these kernels are fast (in float32 they are not). Large
batches (a prefill) go through the same kernels, somewhat slower than a dense bfloat16
matmul would be, but without a dense copy of the weights: the memory saved is the point.

Both kernels dequantize every weight again for each few rows of activations, so from a few
rows on they are limited by arithmetic, not bytes: at 16 rows of the embedded model's
vocabulary projection (49,152 x 576) the int8 one costs several times what it costs at one.
The float head of a checkpoint therefore becomes W8A8 instead (`int8_head`): int8 weights
per output channel times the activations quantized per row to int8, an integer matmul
(`torch._int_mm`, VNNI) that reads each weight once for all rows and is faster than the
weight-only kernel even at one row. A row's logits depend on that row only (per-row scales,
exact int32 sums), so a request's tokens do not depend on what shares its step. The head's
inputs have outlier channels; SmoothQuant's per-channel scales, computed on calibration text
and folded into the final norm, move them into the weights first (`labkit.quant.smoothquant`).
"""
from __future__ import annotations

import torch
from torch import nn

from labkit.quant import rtn
from labkit.quant.qlinear import QuantLinear
from labkit.quant.smoothquant import smooth_scales

KERNEL_GROUPS = (256, 128, 64, 32)   # the int4 kernel's group sizes, largest first
DTYPE = torch.bfloat16               # activations, scales and zeros


class PackedLinear(nn.Module):
    """y = x @ W.T (+ b), W as int4 groups or int8 per output channel, in PyTorch's packed CPU format."""

    def __init__(self, qweight: torch.Tensor, scales: torch.Tensor, in_features: int, bits: int,
                 group_size: int, bias: torch.Tensor | None = None):
        super().__init__()
        self.in_features, self.out_features = in_features, scales.shape[-2 if bits == 4 else 0]
        self.bits, self.group_size = bits, group_size
        self.register_buffer("qweight", qweight)
        self.register_buffer("scales", scales)   # int4: [K / g, N, 2] scale and zero; int8: [N]
        self.register_buffer("bias", None if bias is None else bias.to(DTYPE))

    @classmethod
    def from_codes(cls, qw: rtn.Quantized, in_features: int, bias: torch.Tensor | None = None) -> "PackedLinear":
        """Pack RTN/AWQ codes (`rtn.Quantized`, K possibly zero-padded past `in_features`)."""
        q, n, k = qw.q[:, :in_features], qw.q.shape[0], in_features
        if qw.bits == 8:
            if qw.zero is not None or qw.scale.shape[1] != 1:
                raise ValueError("the int8 CPU kernel takes symmetric per-channel scales")
            return cls(q.to(torch.int8).contiguous(), qw.scale[:, 0].to(DTYPE), k, 8, k, bias)
        if qw.bits != 4 or qw.zero is None:
            raise ValueError(f"the CPU kernels take asymmetric int4 or symmetric int8 codes, not {qw.bits}-bit")
        stored = qw.q.shape[1] // qw.scale.shape[1]               # the stored group (K if per channel)
        g = kernel_group(stored, k)
        if g is None or n % 16:
            raise ValueError(f"no int4 CPU kernel for {n}x{k} in groups of {stored} "
                             f"(N must divide by 16, and one of {KERNEL_GROUPS} divide the group and K)")
        split = stored // g                                         # kernel groups per stored group
        scale = qw.scale.float().repeat_interleave(split, 1)[:, : k // g]
        zero = qw.zero.float().repeat_interleave(split, 1)[:, : k // g]
        scales_zeros = torch.stack([scale, (8 - zero) * scale], -1).transpose(0, 1).contiguous()   # [K / g, N, 2]
        packed = torch._convert_weight_to_int4pack_for_cpu(q.to(torch.int32).contiguous(), 1)
        return cls(packed, scales_zeros.to(DTYPE), k, 4, g, bias)

    @classmethod
    def from_quant_linear(cls, layer: QuantLinear) -> "PackedLinear":
        """The same codes in the CPU kernels' format (W8A8 layers, which quantize their
        activations too, have no such kernel)."""
        if layer.act_bits != 16:
            raise ValueError("W8A8 layers keep their own integer matmul")
        bias = None if layer.bias is None else layer.bias.detach().float()
        return cls.from_codes(layer.codes(), layer.in_features, bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear, bits: int, group_size: int) -> "PackedLinear":
        """RTN-quantize an `nn.Linear` (as `QuantLinear.from_linear` does) straight into this format."""
        from labkit.quant.qlinear import quantize_weight

        bias = None if linear.bias is None else linear.bias.detach().float()
        return cls.from_codes(quantize_weight(linear.weight, bits, group_size), linear.in_features, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if flat.dtype != DTYPE:   # a check, not a call: a no-op .to() costs a dispatch per layer
            flat = flat.to(DTYPE)
        if self.bits == 8:
            y = torch._weight_int8pack_mm(flat, self.qweight, self.scales)
        else:
            y = torch._weight_int4pack_mm_for_cpu(flat, self.qweight, self.group_size, self.scales)
        if self.bias is not None:
            y = y + self.bias
        y = y.view(*x.shape[:-1], self.out_features)
        return y if y.dtype == x.dtype else y.to(x.dtype)

    def dequantize(self) -> torch.Tensor:
        """The dense weight [N, K] (float32) the kernel computes with: the reference for tests."""
        eye = torch.eye(self.in_features, dtype=DTYPE)
        if self.bits == 8:
            return self.qweight.float() * self.scales.float()[:, None]
        return torch._weight_int4pack_mm_for_cpu(eye, self.qweight, self.group_size, self.scales).float().t()

    @property
    def nbytes(self) -> int:
        """Bytes of the packed storage (codes, scales and zeros, bias)."""
        return sum(b.nbytes for b in self.buffers(recurse=False))

    def extra_repr(self) -> str:
        group = f"group={self.group_size}" if self.bits == 4 else "per channel"
        return (f"in={self.in_features}, out={self.out_features}, W{self.bits}A16 {group}, "
                f"{self.nbytes / 2**20:.2f} MiB")


def kernel_group(group_size: int, k: int) -> int | None:
    """The largest group the int4 kernel takes that divides both a stored group and K."""
    return next((g for g in KERNEL_GROUPS if group_size % g == 0 and k % g == 0), None)


def pack_model(model: nn.Module, calibration: torch.Tensor | None = None) -> nn.Module:
    """Repack every `QuantLinear` that a CPU kernel takes into a `PackedLinear`, and cast the
    parameters (embeddings, norms, float layers) to bfloat16; buffers keep their dtype (the
    rotary angles stay float32: bfloat16 positions drift). In place; returns the model.
    Layers without a kernel (W8A8, int8 in groups) stay as they are and compute densely.

    A checkpoint's float vocabulary projection (AWQ leaves it alone) becomes int8 per output
    channel, as llama.cpp runs the same model's head (Q8_0): on a small model the head is as
    many bytes as all the int4 layers together. With `calibration` (token ids [n, T]) it is
    the smoothed W8A8 head (`int8_head`); without, int8 weights and bfloat16 activations.
    Either adds a few thousandths to the KL that W4 costs (docs/benchmarks.md, "Serving").
    A tied embedding keeps its float table for the lookup, which reads one row per token."""
    for module in list(model.modules()):
        for attr, child in list(module.named_children()):
            if isinstance(child, QuantLinear):
                try:
                    setattr(module, attr, PackedLinear.from_quant_linear(child))
                except ValueError:
                    pass
    head = getattr(model, "lm_head", None)
    if type(head) is nn.Linear and any(isinstance(m, PackedLinear) for m in model.modules()):
        if calibration is None:
            model.lm_head = PackedLinear.from_linear(head, 8, rtn.PER_CHANNEL)
        else:
            model.lm_head = int8_head(model, calibration)
    for p in model.parameters():
        p.data = p.data.to(DTYPE)
    return model


@torch.no_grad()
def int8_head(model: nn.Module, calibration: torch.Tensor, alpha: float = 0.5) -> QuantLinear:
    """The model's float `lm_head` as a W8A8 layer (per-channel int8 weights, per-row int8
    activations), with SmoothQuant's scales s for its input channels: the final norm's
    weight is divided by s, the head's weight multiplied by it (a tied embedding's table is
    left as it is). The head's inputs are measured on `calibration` (token ids [n, T])."""
    head, norm = model.lm_head, model.model.norm
    model.lm_head = nn.Identity()     # the model's output is then the head's input
    try:
        act_max = model(calibration).reshape(-1, head.in_features).abs().amax(0)
    finally:
        model.lm_head = head
    weight = head.weight.detach().float()
    s = smooth_scales(act_max, weight.abs().amax(0), alpha)
    norm.weight.data = (norm.weight.float() / s).to(norm.weight.dtype)
    smoothed = nn.Linear(head.in_features, head.out_features, bias=False, device="meta")   # no init to overwrite
    smoothed.weight = nn.Parameter(weight * s, requires_grad=False)
    return QuantLinear.from_linear(smoothed, 8, rtn.PER_CHANNEL, act_bits=8)
