"""`load_model`: the one loader every command, the engine and the notebooks use.

It sits above `labkit.models` (full-precision checkpoints) and `labkit.quant` (quantized
ones), so that neither has to import the other. A folder whose config.json has a
`quantization_config` (a `labkit lite` output, or an AutoAWQ gemm checkpoint) loads with
`QuantLinear` layers holding the stored tensors as they are.
"""
from __future__ import annotations

import torch

from labkit.models import Llama, Tokenizer, load
from labkit.models.loader import load_tokenizer, read_config, read_tensors, resolve


def default_dtype(device: str) -> torch.dtype:
    """float16 on a GPU (what the kernels take), float32 on a CPU (fast and exact there)."""
    return torch.float16 if str(device).startswith("cuda") else torch.float32


def default_backend(device: str) -> str:
    """`numba` (the Numba kernels) on a GPU, `torch` elsewhere."""
    return "numba" if str(device).startswith("cuda") else "torch"


def load_model(spec: str = "embedded", device: str = "cpu", dtype: torch.dtype | None = None,
               backend: str | None = None) -> tuple[Llama, Tokenizer]:
    """(model, tokenizer) for MODEL = 'embedded' | folder | hub id.

    `backend` ('torch' or 'numba', default by device) chooses how quantized linear layers
    compute; it does not matter for a full-precision model.
    """
    dtype = dtype or default_dtype(device)
    path = resolve(spec)
    raw = read_config(path)
    if "quantization_config" not in raw:
        return load(str(path), dtype, device)
    from labkit.quant.checkpoint import load_quantized

    model = load_quantized(path, raw, read_tensors(path), dtype, device, backend or default_backend(device))
    return model, load_tokenizer(path)
