"""Quantized checkpoints: a folder every MODEL argument accepts.

`model.safetensors` + `config.json` (the model's Hugging Face config plus a
`quantization_config`) + the source's tokenizer files. Linear layers are stored as their
`QuantLinear` buffers under the Hugging Face names (`model.layers.0.self_attn.q_proj.qweight`
...), everything else in float16 (1-D tensors, norms and biases, keep float32).

- 4-bit: AutoAWQ's "gemm" format, `{"quant_method": "awq", "bits": 4, "group_size": g,
  "zero_point": true, "version": "gemm"}` with `qweight`/`qzeros`/`scales`, so engines that
  read AWQ checkpoints (vLLM, LMDeploy) load it, provided every layer's input size is a
  multiple of the group size (see `labkit.quant.qlinear` on padding).
- 8-bit: labkit's own `{"quant_method": "labkit_int8", "bits": 8, "group_size": g or -1,
  "activation_bits": 16 or 8}` with `qweight` (int8) and `scales` (W8A16, or SmoothQuant's W8A8).

`config.json` also records `"labkit": {"source": MODEL, "method": ...}`: `labkit eval` compares
against the source by default. Writing goes to a temporary folder next to the target that
is renamed into place, so an interrupted run leaves nothing half-written.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from labkit.errors import UserError
from labkit.models.llama import Llama, LlamaConfig, UnsupportedModel, linear_layers, rope_frequencies
from labkit.quant import rtn
from labkit.quant.qlinear import QuantLinear

SKIPPED_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json")


def quantization_config(model: nn.Module) -> dict:
    """The `quantization_config` describing a model's QuantLinear layers (all alike)."""
    kinds = {(m.bits, m.act_bits, rtn.PER_CHANNEL if m.per_channel else m.group_size)
             for m in model.modules() if isinstance(m, QuantLinear)}
    if len(kinds) != 1:
        raise ValueError(f"a checkpoint needs every linear quantized the same way, found {sorted(kinds)}")
    bits, act_bits, group = kinds.pop()
    if bits == 4:
        return {"quant_method": "awq", "bits": 4, "group_size": group, "zero_point": True, "version": "gemm"}
    return {"quant_method": "labkit_int8", "bits": 8, "group_size": group, "activation_bits": act_bits}


def prepare_work_dir(out: Path, force: bool) -> None:
    """Refuse to overwrite a non-empty folder (or a file) unless forced."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--work-dir {out} is a file")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(f"--work-dir {out} exists and is not empty (use --force to replace it)")


def save_quantized(model: Llama, out: str | Path, source: str, tokenizer_dir: str | Path | None,
                   method: str, force: bool = False, extra: dict | None = None) -> Path:
    """Write `model` (its linears already QuantLinear) as a checkpoint folder at `out`."""
    out = Path(out).expanduser()
    prepare_work_dir(out, force)
    config = {**model.config.to_hf(), "torch_dtype": "float16", "quantization_config": quantization_config(model),
              "labkit": {"source": source, "method": method, **(extra or {})}}
    tensors = {}
    for name, t in model.state_dict().items():
        if model.config.tie_word_embeddings and name == "lm_head.weight":
            continue
        if t.is_floating_point() and t.dim() > 1 and not name.endswith(".scales"):
            t = t.half()
        tensors[name] = t.detach().contiguous().cpu()
    return write_folder(out, tensors, config, tokenizer_dir, force)


def write_folder(out: Path, tensors: dict[str, torch.Tensor], config: dict, tokenizer_dir: str | Path | None,
                 force: bool = False) -> Path:
    """`model.safetensors` + `config.json` + the tokenizer files of `tokenizer_dir`, written to a
    temporary folder next to `out` and renamed into place (labkit.prune writes through it too)."""
    prepare_work_dir(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        from safetensors.torch import save_file

        save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        for f in Path(tokenizer_dir).iterdir() if tokenizer_dir else ():
            if f.is_file() and f.name not in SKIPPED_FILES and not f.name.endswith(".safetensors"):
                shutil.copy2(f, tmp / f.name)
        _replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _replace(new: Path, out: Path) -> None:
    """Move `new` to `out`, swapping out an existing folder only once `new` is complete."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(new, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def quant_settings(raw: dict) -> tuple[int, int, int]:
    """(bits, group_size, act_bits) of a config's `quantization_config`, or a UserError."""
    qc = raw["quantization_config"]
    method, bits, group = qc.get("quant_method"), qc.get("bits"), qc.get("group_size", rtn.PER_CHANNEL)
    if method == "awq" and bits == 4 and qc.get("version", "gemm").lower() == "gemm" and qc.get("zero_point", True):
        return 4, group, 16
    if method == "labkit_int8" and bits == 8:
        return 8, group, qc.get("activation_bits", 16)
    raise UserError(f"unsupported quantization_config {json.dumps(qc)} (labkit reads AWQ gemm 4-bit "
                    "with zero points, and its own labkit_int8)")


def load_quantized(path: Path, raw: dict, tensors: dict[str, torch.Tensor], dtype: torch.dtype,
                   device: str = "cpu", backend: str = "torch") -> Llama:
    """A Llama whose linears are QuantLinear modules holding the checkpoint's tensors as they are."""
    bits, group, act_bits = quant_settings(raw)
    try:
        config = LlamaConfig.from_hf(raw)
    except UnsupportedModel as e:
        raise UserError(str(e)) from e
    with torch.device("meta"):
        model = Llama(config)
        for name, parent, attr in linear_layers(model):
            lin = getattr(parent, attr)
            try:
                q = QuantLinear(lin.in_features, lin.out_features, bits, group, lin.bias is not None, act_bits, backend)
            except ValueError as e:
                raise UserError(f"{path}: {name}: {e}") from e
            setattr(parent, attr, q)
    model = model.to_empty(device=device)
    for p in model.parameters():  # floats in the compute dtype; quantized buffers stay as stored
        p.data = p.data.to(dtype)
    model.inv_freq = rope_frequencies(config).to(device)
    if config.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)
    try:
        missing, unexpected = model.load_state_dict(tensors, strict=False)
    except RuntimeError as e:  # a tensor of the wrong shape
        raise UserError(f"{path}: tensors do not match the quantization_config: {str(e).splitlines()[-1].strip()}") from e
    missing = [m for m in missing if not (config.tie_word_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        raise UserError(f"{path}: tensors do not match the quantization_config: missing {missing[:4]}, "
                        f"unexpected {unexpected[:4]}")
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    return model.eval()
