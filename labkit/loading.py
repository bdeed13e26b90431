"""`load_model`: the one loader every command, the engine and the notebooks use.

It sits above `labkit.models` (full-precision checkpoints) and `labkit.quant` (quantized
ones), so that neither has to import the other.
"""
from __future__ import annotations

import torch

from labkit.models import Llama, Tokenizer, load


def default_dtype(device: str) -> torch.dtype:
    """float16 on a GPU (what the kernels take), float32 on a CPU (fast and exact there)."""
    return torch.float16 if str(device).startswith("cuda") else torch.float32


def load_model(spec: str = "embedded", device: str = "cpu", dtype: torch.dtype | None = None) -> tuple[Llama, Tokenizer]:
    """(model, tokenizer) for MODEL = 'embedded' | folder | hub id."""
    return load(spec, dtype or default_dtype(device), device)
