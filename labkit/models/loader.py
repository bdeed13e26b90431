"""Find a model and load it: `embedded`, a local Hugging Face folder, or a hub id.

Safetensors only: pickled `.bin` checkpoints can run code when loaded, so they are refused.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from labkit.errors import UserError
from labkit.models.llama import Llama, LlamaConfig, UnsupportedModel, rope_frequencies
from labkit.models.tokenizer import Tokenizer

HUB_FILES = ["*.json", "*.safetensors", "tokenizer.model"]


def resolve(spec: str = "embedded") -> Path:
    """The local folder for MODEL = `embedded` | path | hub id (downloaded when online)."""
    if spec == "embedded":
        from labkit.models.embedded import embedded_dir

        return embedded_dir()
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(f"{spec} is a file; MODEL must be a folder with config.json and *.safetensors")
        return check_folder(path)
    if spec.count("/") != 1 or spec.startswith((".", "/", "~")):
        raise UserError(f"no such model folder: {spec} (MODEL is 'embedded', a folder, or a hub id like org/name)")
    return check_folder(_download(spec))


def _download(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES))
    except Exception as e:  # offline, unknown repo, gated model: all the same to the user
        raise UserError(f"cannot fetch {repo_id!r} from the model hub: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from e


def check_folder(path: Path) -> Path:
    if not (path / "config.json").is_file():
        raise UserError(f"{path} has no config.json")
    if not any(path.glob("*.safetensors")):
        if any(path.glob("*.bin")) or any(path.glob("*.pt")):
            raise UserError(f"{path} holds only pickled weights (.bin/.pt); labkit loads safetensors only")
        raise UserError(f"{path} has no *.safetensors weights")
    return path


def read_config(path: Path) -> dict:
    try:
        return json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path / 'config.json'} is not valid JSON: {e}") from e


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of every safetensors shard in the folder."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(path.glob("*.safetensors")):
        try:
            tensors.update(load_file(shard))
        except (SafetensorError, OSError) as e:
            raise UserError(f"cannot read {shard}: {e} (corrupt or truncated file)") from e
    return tensors


def build(config: LlamaConfig, tensors: dict[str, torch.Tensor], dtype: torch.dtype, device="cpu") -> Llama:
    """A Llama with these weights; missing or unexpected tensors are an error, not a warning."""
    with torch.device("meta"):
        model = Llama(config)
    model = model.to_empty(device=device).to(dtype)
    model.inv_freq = rope_frequencies(config).to(device)  # to_empty left the buffer uninitialized
    tensors = {k: v for k, v in tensors.items() if not k.endswith("rotary_emb.inv_freq")}
    if config.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)
    missing, unexpected = model.load_state_dict(tensors, strict=False, assign=False)
    missing = [m for m in missing if not (config.tie_word_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        raise UserError(f"weights do not match the config: missing {missing[:4]}, unexpected {unexpected[:4]}")
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    return model.eval()


def load(spec: str = "embedded", dtype: torch.dtype = torch.float32, device: str = "cpu") -> tuple[Llama, Tokenizer]:
    """Load a full-precision checkpoint as (model, tokenizer)."""
    path = resolve(spec)
    raw = read_config(path)
    if "quantization_config" in raw:
        raise UserError(f"{path} is a quantized checkpoint: load it with labkit.load_model")
    try:
        config = LlamaConfig.from_hf(raw)
    except UnsupportedModel as e:
        raise UserError(str(e)) from e
    model = build(config, read_tensors(path), dtype, device)
    return model, load_tokenizer(path)


def load_tokenizer(path: Path) -> Tokenizer:
    if not (path / "tokenizer.json").is_file():
        raise UserError(f"{path} has no tokenizer.json")
    return Tokenizer(path)
