"""Pruned checkpoints: ordinary Hugging Face folders that every MODEL argument accepts.

`model.safetensors` (dense tensors in the source's dtype; unstructured and N:M pruning leave
exact zeros in them) + `config.json` (the model's config, smaller where structured pruning
removed layers, heads or channels) + the source's tokenizer files. config.json adds two
sections:

- `"prune"`: what was done (method, sparsity or ratio, pattern, calibration, removed layers,
  the per-layer sparsity report);
- `"labkit": {"source": MODEL, "method": "prune_<method>"}`: `labkit eval` compares against
  the source by default, as it does for quantized checkpoints.

Written through `labkit.quant.checkpoint.write_folder`: a temporary folder renamed into
place, `force` to replace a non-empty folder.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from labkit.errors import UserError
from labkit.models.llama import Llama
from labkit.quant.checkpoint import write_folder

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def check_prunable(model: nn.Module) -> None:
    """Pruning works on labkit's full-precision Llama-family models; refuse anything else in one line."""
    if not isinstance(model, Llama):
        raise UserError(f"pruning supports labkit's Llama-family models, not {type(model).__name__}")
    for name, module in model.named_modules():
        if type(module) is not nn.Linear and name.rsplit(".", 1)[-1].endswith("_proj"):
            raise UserError(f"{name} is a {type(module).__name__}: prune a full-precision model "
                            "(prune first, then quantize)")


def storage_dtype(model: Llama) -> str:
    """The dtype the source checkpoint was stored in (its config's torch_dtype), float16 by default."""
    name = model.config.extra.get("torch_dtype") or model.config.extra.get("dtype") or "float16"
    return name if name in DTYPES else "float16"


def save_pruned(model: Llama, out: str | Path, source: str, tokenizer_dir: str | Path | None,
                section: dict, force: bool = False) -> Path:
    """Write `model` as a checkpoint folder at `out`, with `section` as config.json's "prune"."""
    out = Path(out).expanduser()
    dtype = storage_dtype(model)
    config = {**model.config.to_hf(), "torch_dtype": dtype, "prune": section,
              "labkit": {"source": source, "method": f"prune_{section['method']}"}}
    tensors = {}
    for name, t in model.state_dict().items():
        if model.config.tie_word_embeddings and name == "lm_head.weight":
            continue
        if t.is_floating_point():
            t = t.to(DTYPES[dtype])
        tensors[name] = t.detach().contiguous().cpu()
    return write_folder(out, tensors, config, tokenizer_dir, force)
