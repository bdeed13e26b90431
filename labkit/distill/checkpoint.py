"""Checkpoints of a distillation run: an ordinary model folder, plus the trainer's state.

A checkpoint folder is what every MODEL argument accepts (`config.json` with a `labkit`
record of where the model came from, `model.safetensors`, the tokenizer files), written in
the training dtype so that a resumed run starts from exactly the weights it stopped with.
Next to the model, `trainer.safetensors` holds the optimizer's moments (and any learned
projection of the hidden-state loss) and `trainer.json` the step, the schedule and the loss
curve so far. Safetensors and JSON only: nothing is unpickled on resume.

Folders are written to a temporary name and renamed into place (`labkit.quant.checkpoint.
write_folder`), and `trainer.json` is written last: a run killed while writing leaves the
previous checkpoint whole, and a folder without `trainer.json` is not a checkpoint.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from labkit.models.llama import Llama
from labkit.quant.checkpoint import write_folder

STATE_TENSORS, STATE_JSON = "trainer.safetensors", "trainer.json"


def model_tensors(model: Llama) -> dict[str, torch.Tensor]:
    """The state dict as safetensors takes it: no tied duplicate, contiguous, on the CPU."""
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()
            if not (model.config.tie_word_embeddings and k == "lm_head.weight")}


def save_model(out: Path, model: Llama, source: str, tokenizer_dir: Path, record: dict) -> Path:
    """`model` as a MODEL folder in its own dtype, `labkit.source` naming the teacher."""
    dtype = str(model.lm_head.weight.dtype).removeprefix("torch.")
    config = {**model.config.to_hf(), "torch_dtype": dtype, "labkit": {"source": source, **record}}
    return write_folder(out, model_tensors(model), config, tokenizer_dir, force=True)


def save_checkpoint(out: Path, model: Llama, source: str, tokenizer_dir: Path, record: dict,
                    tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """The model folder, then the trainer state; `trainer.json` last marks the checkpoint complete."""
    from safetensors.torch import save_file

    save_model(out, model, source, tokenizer_dir, record)
    save_file(tensors, out / f".{STATE_TENSORS}")
    os.replace(out / f".{STATE_TENSORS}", out / STATE_TENSORS)
    (out / f".{STATE_JSON}").write_text(json.dumps(meta, indent=1))
    os.replace(out / f".{STATE_JSON}", out / STATE_JSON)
    return out


def write_final(work_dir: Path, model: Llama, source: str, tokenizer_dir: Path, record: dict) -> Path:
    """The trained model at the top of the work dir (which then is a MODEL folder itself).

    Written whole into a hidden folder first, then moved file by file, `config.json` last:
    a loader finds no config until the weights next to it are complete."""
    staged = save_model(work_dir / ".final", model, source, tokenizer_dir, record)
    for f in sorted(staged.iterdir(), key=lambda f: f.name == "config.json"):
        os.replace(f, work_dir / f.name)
    staged.rmdir()
    return work_dir


def optimizer_state(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's state dict split into named tensors and a JSON-able rest."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for index, slots in sd["state"].items():
        for key, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer_state(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def module_tensors(prefix: str, module: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().contiguous().cpu() for k, v in module.state_dict().items()}


def load_module_tensors(prefix: str, module: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    own = {k.removeprefix(prefix + "."): v for k, v in tensors.items() if k.startswith(prefix + ".")}
    module.load_state_dict(own)


def read_state(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors.torch import load_file

    return load_file(folder / STATE_TENSORS), json.loads((folder / STATE_JSON).read_text())


def latest(checkpoints: Path) -> Path | None:
    """The newest complete checkpoint folder (step-NNNNNN) under `checkpoints`, if any."""
    done = sorted(p for p in checkpoints.glob("step-*") if (p / STATE_JSON).is_file()) if checkpoints.is_dir() else []
    return done[-1] if done else None
