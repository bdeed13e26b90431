"""`QuantLinear`: a drop-in replacement for `nn.Linear` that stores quantized weights.

It holds exactly the tensors a checkpoint stores (docs/internals.md), so loading is a copy
and nothing is repacked:

- **W4A16** (`bits=4`): AutoAWQ "gemm" layout, `qweight` int32 `[K, N // 8]`, `qzeros` int32
  `[K // g, N // 8]`, `scales` float16 `[K // g, N]`, asymmetric.
- **W8A16** (`bits=8`): `qweight` int8 `[N, K]`, `scales` float16 `[N, K // g]`, symmetric.
- **W8A8** (`bits=8, act_bits=8`, per-channel weights): the W8A16 tensors, and each call
  quantizes the activations per token to int8 so the matmul runs on integers
  (`torch._int_mm`, int32 accumulation), as SmoothQuant deploys.

Backends. `torch` (any device) dequantizes to a dense weight and calls `F.linear`; it is
the reference, and keeps that dense copy after the first call (`nbytes` reports the
quantized storage, what a GPU holds and the checkpoint weighs; `drop_dense_cache()` frees
it). `numba` runs the kernels of `labkit.kernels` on a CUDA device and never materializes
the dense weight. On a CPU the engine repacks these codes once for PyTorch's packed CPU
kernels (`labkit.quant.cpu`), which never materialize it either.

Group sizes that do not divide `in_features` (group 128 on SmolLM2's hidden size 576) are
handled by zero-padding the input dimension up to a multiple of the group: the padded
weight columns are zero and the padded inputs are zero, so they add nothing, and every
kept group still covers at most `g` real weights. The padding costs storage (576 -> 640 is
+11% on those layers) and makes the checkpoint one that only labkit reads; a group size
that divides every layer (64 on SmolLM2) gives a plain AutoAWQ checkpoint.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from labkit.kernels.packing import dequantize_int4, pack_int4, unpack_int4
from labkit.quant import rtn

BACKENDS = ("torch", "numba")
SUPPORTED_BITS = (4, 8)

# (x, qweight, qzeros, scales, bits, group_size) -> y: how a numba-backed layer runs (int8
# layers have no qzeros and pass their scales there)
Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, int], torch.Tensor]


def numba_kernel(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, bits: int,
                 group_size: int) -> torch.Tensor:
    """The Numba kernels through `labkit.kernels.dispatch`: W4A16, or W8A16 (`qzeros` unused)."""
    from labkit.kernels.dispatch import w4a16_linear, w8a16_linear

    if bits == 4:
        return w4a16_linear(x, qweight, qzeros, scales, group_size)
    return w8a16_linear(x, qweight, scales, group_size)


class QuantLinear(nn.Module):
    """y = x @ dequant(W).T + b, with W stored as int4 (AWQ gemm) or int8 codes."""

    def __init__(self, in_features: int, out_features: int, bits: int = 4, group_size: int = 128,
                 bias: bool = False, act_bits: int = 16, backend: str = "torch"):
        super().__init__()
        check_supported(in_features, out_features, bits, group_size, act_bits)
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r} is not one of {BACKENDS}")
        g = in_features if group_size == rtn.PER_CHANNEL else group_size
        self.in_features, self.out_features = in_features, out_features
        self.bits, self.group_size, self.act_bits, self.backend = bits, g, act_bits, backend
        self.per_channel = group_size == rtn.PER_CHANNEL
        self.padded_in = math.ceil(in_features / g) * g
        groups = self.padded_in // g
        if bits == 4:
            self.register_buffer("qweight", torch.zeros(self.padded_in, out_features // 8, dtype=torch.int32))
            self.register_buffer("qzeros", torch.zeros(groups, out_features // 8, dtype=torch.int32))
            self.register_buffer("scales", torch.zeros(groups, out_features, dtype=torch.float16))
        else:
            self.register_buffer("qweight", torch.zeros(out_features, self.padded_in, dtype=torch.int8))
            self.register_buffer("scales", torch.zeros(out_features, groups, dtype=torch.float16))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self._dense: torch.Tensor | None = None
        self.kernel: Kernel = numba_kernel   # the numba backend's call (`set_kernel`)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_linear(cls, linear: nn.Linear, bits: int = 4, group_size: int = 128, act_bits: int = 16,
                    backend: str = "torch") -> "QuantLinear":
        """RTN-quantize an `nn.Linear` (asymmetric int4, symmetric int8)."""
        n, k = linear.weight.shape
        module = cls(k, n, bits, group_size, linear.bias is not None, act_bits, backend)
        module.load_codes(quantize_weight(linear.weight, bits, group_size))
        if linear.bias is not None:
            module.bias = linear.bias.detach().float().clone()
        return module.to(linear.weight.device)

    @classmethod
    def concat(cls, parts: list["QuantLinear"]) -> "QuantLinear":
        """One layer computing the outputs of `parts` (same input, same format) side by side.

        Every quantity is per output channel, so this is concatenation along N: int4 codes and
        zeros are packed 8 output channels per word (N of each part is a multiple of 8)."""
        first = parts[0]
        fmt = lambda m: (m.in_features, m.bits, m.group_size, m.act_bits, m.backend, m.bias is None)  # noqa: E731
        if any(fmt(m) != fmt(first) for m in parts):
            raise ValueError("only layers with the same input, format, backend and bias use can be concatenated")
        module = cls(first.in_features, sum(m.out_features for m in parts), first.bits,
                     rtn.PER_CHANNEL if first.per_channel else first.group_size, first.bias is not None,
                     first.act_bits, first.backend).to(first.qweight.device)
        dim = 1 if first.bits == 4 else 0   # int4: [K, N / 8]; int8: [N, K]
        module.qweight = torch.cat([m.qweight for m in parts], dim)
        module.scales = torch.cat([m.scales for m in parts], dim)
        if first.bits == 4:
            module.qzeros = torch.cat([m.qzeros for m in parts], 1)
        if first.bias is not None:
            module.bias = torch.cat([m.bias for m in parts])
        module.kernel = first.kernel
        return module

    def load_codes(self, qw: rtn.Quantized) -> None:
        """Store RTN codes ([N, K] codes, [N, K // g] scales/zeros) in this module's layout."""
        if self.bits == 4:
            self.qweight = pack_int4(qw.q.t())
            self.qzeros = pack_int4(qw.zero.t())
            self.scales = qw.scale.t().contiguous().half()
        else:
            self.qweight = qw.q.to(torch.int8)
            self.scales = qw.scale.half()
        self._dense = None

    def codes(self) -> rtn.Quantized:
        """The stored codes as `rtn.Quantized` ([N, padded K] codes, [N, groups] scales and
        zeros): the inverse of `load_codes`."""
        if self.bits == 4:
            return rtn.Quantized(unpack_int4(self.qweight).t().to(torch.int16), self.scales.t().float(),
                                 unpack_int4(self.qzeros).t().float(), 4, self.group_size)
        return rtn.Quantized(self.qweight.to(torch.int16), self.scales.float(), None, 8, self.group_size)

    # ------------------------------------------------------------------ compute

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The dense weight [N, padded K] this module computes with."""
        if self.bits == 4:
            return dequantize_int4(self.qweight, self.qzeros, self.scales.float(), self.group_size).to(dtype)
        from labkit.kernels.w8a16_gemv import dequantize_int8

        return dequantize_int8(self.qweight, self.scales.float(), self.group_size).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padded_in != self.in_features:
            x = F.pad(x, (0, self.padded_in - self.in_features))
        if self.act_bits == 8:
            y = w8a8_linear(x, self.qweight, self.scales)
        elif self.backend == "numba" and x.is_cuda:
            zeros = self.qzeros if self.bits == 4 else self.scales
            y = self.kernel(x, self.qweight, zeros, self.scales, self.bits, self.group_size)
        else:
            y = F.linear(x, self._dense_weight(x))
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def _dense_weight(self, x: torch.Tensor) -> torch.Tensor:
        if self._dense is None or self._dense.dtype != x.dtype or self._dense.device != x.device:
            self._dense = self.dequantize(x.dtype).to(x.device)
        return self._dense

    def set_kernel(self, kernel: Kernel) -> None:
        """Run the numba backend through `kernel` (same arguments and result as `numba_kernel`):
        the engine passes its custom op, which `torch.compile` can trace around."""
        self.kernel = kernel

    def drop_dense_cache(self) -> None:
        self._dense = None

    def _load_from_state_dict(self, *args, **kwargs):
        self._dense = None  # new codes: the dense copy is stale
        return super()._load_from_state_dict(*args, **kwargs)

    # ------------------------------------------------------------------ reporting

    @property
    def nbytes(self) -> int:
        """Bytes of the quantized storage (codes, zeros, scales, bias)."""
        return sum(b.nbytes for b in self.buffers(recurse=False))

    def extra_repr(self) -> str:
        act = "A8" if self.act_bits == 8 else "A16"
        pad = f", padded_in={self.padded_in}" if self.padded_in != self.in_features else ""
        return (f"in={self.in_features}, out={self.out_features}, W{self.bits}{act}, group={self.group_size}"
                f"{pad}, backend={self.backend}, {self.nbytes / 2**20:.2f} MiB")


def check_supported(in_features: int, out_features: int, bits: int, group_size: int, act_bits: int = 16) -> None:
    """Raise ValueError (with the numbers) for a layout QuantLinear cannot store."""
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"QuantLinear stores {SUPPORTED_BITS}-bit weights, not {bits}-bit")
    if group_size != rtn.PER_CHANNEL and (group_size < 8 or group_size & (group_size - 1)):
        raise ValueError(f"group size {group_size} is not supported (a power of two >= 8, or -1 for per-channel)")
    if bits == 4 and out_features % 8:
        raise ValueError(f"int4 packing needs out_features divisible by 8, got {out_features}")
    if act_bits not in (8, 16) or (act_bits == 8 and (bits != 8 or group_size != rtn.PER_CHANNEL)):
        raise ValueError("8-bit activations need 8-bit per-channel weights (W8A8); otherwise act_bits=16")


def quantize_weight(w: torch.Tensor, bits: int, group_size: int) -> rtn.Quantized:
    """RTN codes of W [N, K] as QuantLinear stores them: K zero-padded up to a multiple of
    the group, asymmetric int4 or symmetric int8, scales rounded to float16 first."""
    k = w.shape[1]
    g = k if group_size == rtn.PER_CHANNEL else group_size
    padded = F.pad(w.detach().float(), (0, math.ceil(k / g) * g - k))
    return rtn.quantize(padded, bits, g, sym=bits == 8, scale_dtype=torch.float16)


def simulate(w: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    """The dense weight a QuantLinear made from `w` computes with (shape and dtype of `w`):
    what AWQ's search and the tests compare against, without building the module."""
    return rtn.dequantize(quantize_weight(w, bits, group_size))[:, : w.shape[1]].to(w.dtype)


def check_model(config, bits: int, group_size: int, act_bits: int = 16) -> None:
    """Check every linear shape of a Llama config before any work starts."""
    q, kv = config.num_attention_heads * config.head_dim, config.num_key_value_heads * config.head_dim
    shapes = {"q_proj": (config.hidden_size, q), "k_proj": (config.hidden_size, kv), "o_proj": (q, config.hidden_size),
              "gate_proj": (config.hidden_size, config.intermediate_size),
              "down_proj": (config.intermediate_size, config.hidden_size)}
    for name, (k, n) in shapes.items():
        try:
            check_supported(k, n, bits, group_size, act_bits)
        except ValueError as e:
            raise ValueError(f"{name} ({k} -> {n}): {e}") from e


# ---------------------------------------------------------------------------- W8A8


def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per row of a 2-D activation: (codes int8 [M, K], scales float32 [M, 1])."""
    scale = (x.abs().amax(-1, keepdim=True).float() / 127).clamp(min=1e-8)
    return torch.round(x.float() / scale).clamp(-127, 127).to(torch.int8), scale


def int8_matmul(a: torch.Tensor, b_t: torch.Tensor) -> torch.Tensor:
    """a [M, K] int8 @ b_t.T ([N, K] int8) -> int32 [M, N], exactly.

    `torch._int_mm` uses integer matrix units (int8 tensor cores, VNNI) where it has a
    kernel for the shape (on a GPU: more than 16 rows, sizes divisible by 8); elsewhere
    float64 is exact for these sums (|sum| < 2^53).
    """
    if hasattr(torch, "_int_mm") and (a.shape[0] > 16 or not a.is_cuda) and a.shape[1] % 8 == 0 \
            and b_t.shape[0] % 8 == 0:
        try:
            return torch._int_mm(a, b_t.t())
        except RuntimeError:
            pass
    return (a.double() @ b_t.double().t()).to(torch.int32)


def w8a8_linear(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Per-token int8 activations x per-channel int8 weights, rescaled to x's dtype."""
    shape = x.shape
    xq, sx = quantize_per_token(x.reshape(-1, shape[-1]))
    acc = int8_matmul(xq, qweight)
    y = acc.float() * sx * scales.float().reshape(1, -1)
    return y.to(x.dtype).reshape(*shape[:-1], qweight.shape[0])


# ---------------------------------------------------------------------------- whole models


def quantize_linears(model: nn.Module, bits: int = 4, group_size: int = 128, act_bits: int = 16,
                     backend: str = "torch", progress=None) -> nn.Module:
    """Replace every swappable linear layer (not `lm_head`) by an RTN `QuantLinear`, in place."""
    from labkit.models.llama import linear_layers

    layers = list(linear_layers(model))
    for name, parent, attr in (progress(layers) if progress else layers):
        linear = getattr(parent, attr)
        try:
            setattr(parent, attr, QuantLinear.from_linear(linear, bits, group_size, act_bits, backend))
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from e
    return model


def set_backend(model: nn.Module, backend: str) -> nn.Module:
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not one of {BACKENDS}")
    for m in model.modules():
        if isinstance(m, QuantLinear):
            m.backend = backend
    return model


def weight_bytes(model: nn.Module, float_bytes: int | None = 2) -> int:
    """Weight memory. Quantized layers (anything holding `qweight` codes: `QuantLinear`, and
    `labkit.quant.cpu.PackedLinear` on a CPU) count their storage as it is; every other weight
    counts `float_bytes` per element (2 = float16, what a GPU serves with), or, with None, as
    the model holds it. A tied embedding counts once."""
    quant = sum(m.nbytes for m in model.modules() if hasattr(m, "qweight"))
    params = {id(p): p for p in model.parameters()}.values()
    return quant + sum(p.nbytes if float_bytes is None else p.numel() * float_bytes for p in params)
