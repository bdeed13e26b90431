"""The roofline model: how fast can a kernel with a given arithmetic intensity run?

A kernel that does F FLOPs while moving B bytes takes at least `max(F / peak, B / bandwidth)`
seconds. Dividing by B, its attainable rate is `min(peak, intensity * bandwidth)` with
`intensity = F / B`: a sloped roof (memory-bound) that meets a flat one (compute-bound) at
the ridge point `peak / bandwidth`. One decode step of an LLM has an intensity of about the
batch size (fp16 weights), while GPUs have ridges of 100-300 FLOPs/byte, so single-stream
decoding uses a few percent of a GPU's arithmetic, and batching is nearly free until the
ridge.
"""
from __future__ import annotations

from dataclasses import dataclass

from labkit.models.llama import LlamaConfig
from labkit.profile import cost
from labkit.profile.hardware import Device


def attainable_flops(intensity: float, device: Device) -> float:
    """FLOP/s the roofline allows at `intensity` FLOPs per byte."""
    return min(device.flops_per_s, intensity * device.bytes_per_s)


def ridge_point(device: Device) -> float:
    """The intensity (FLOPs per byte) where the memory roof meets the compute roof."""
    return device.ridge


def lower_bound_seconds(flops: float, nbytes: float, device: Device) -> float:
    """The roofline's lower bound on the time of a kernel: it can overlap, not skip, either cost."""
    return max(flops / device.flops_per_s, nbytes / device.bytes_per_s)


@dataclass
class DecodePoint:
    """One decode step of `batch` sequences at `context` tokens, placed on a roofline."""

    batch: int
    context: int
    flops: float
    bytes: float
    intensity: float
    attainable_flops: float     # FLOP/s
    seconds: float              # lower bound on the step time
    tokens_per_s: float         # batch / seconds: the best throughput the device allows
    bound: str                  # "memory" or "compute"


def decode_point(config: LlamaConfig, device: Device, batch: int, context: int, weight_bits: float = 16,
                 kv_bits: float = 16) -> DecodePoint:
    """Roofline estimate of one decode step (formulas of `labkit.profile.cost`)."""
    flops = cost.decode_flops(config, batch, context)
    nbytes = cost.decode_bytes(config, batch, context, weight_bits, kv_bits)
    intensity = flops / nbytes
    seconds = lower_bound_seconds(flops, nbytes, device)
    return DecodePoint(batch, context, flops, nbytes, intensity, attainable_flops(intensity, device), seconds,
                       batch / seconds, "memory" if intensity < device.ridge else "compute")


def decode_sweep(config: LlamaConfig, device: Device, batches: list[int], context: int, weight_bits: float = 16,
                 kv_bits: float = 16) -> list[DecodePoint]:
    """`decode_point` for each batch size."""
    return [decode_point(config, device, b, context, weight_bits, kv_bits) for b in batches]


def critical_batch(config: LlamaConfig, device: Device, context: int, weight_bits: float = 16, kv_bits: float = 16,
                   limit: int = 1 << 16) -> int | None:
    """The smallest batch whose decode step reaches the ridge (None if none up to `limit`).

    With a long context the KV cache, read once per sequence, grows as fast as the FLOPs, so
    the intensity saturates below the ridge and no batch size makes decoding compute-bound.
    """
    def reaches(b: int) -> bool:
        return cost.arithmetic_intensity(config, b, context, weight_bits, kv_bits) >= device.ridge

    if not reaches(limit):
        return None
    lo, hi = 0, limit  # reaches(hi) holds; find the smallest such batch
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if reaches(mid) else (mid, hi)
    return hi
