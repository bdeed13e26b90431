"""The chat page's model selector: full precision, W8, W4 AWQ (quantized once and cached),
and every labkit checkpoint in a folder the learner names (`labkit chat --models-dir DIR`).

A variant is a checkpoint folder `LLM(model=...)` accepts. Quantizing takes a while (AWQ
runs calibration), so the first use writes the folder into the labkit cache
(`labkit.paths.cache_dir() / "chat"`) and every later use, in this process or the next,
loads it from there. The folder is written under a temporary name and renamed when
complete, so an interrupted run never leaves a half checkpoint that looks finished.

Quantization itself is `labkit lite ...` (the same command a learner runs), started as a
child process: it keeps the calibration's memory out of the serving process and shows the
exact command to reproduce a variant by hand. Its progress lines go to a callback.

Each choice's quality is `labkit eval`'s JSON, cached as `eval.json` next to the checkpoint
(`eval_file`), so it is measured once per checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from labkit.errors import UserError
from labkit.paths import cache_dir

GROUP_SIZE = 128   # the comparison group size of the course (the embedded weights were g32 already)


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    lite_args: tuple[str, ...]   # `labkit lite ...` arguments after MODEL; empty: the model as given


VARIANTS = {
    v.key: v for v in (
        Variant("fp", "full precision", ()),
        Variant("w8", "W8 (int8 weights, RTN, g128)", ("rtn", "--w-bits", "8", "--w-group-size", str(GROUP_SIZE))),
        Variant("w4-awq", "W4 AWQ (int4 weights, g128)", ("auto_awq", "--w-bits", "4", "--w-group-size", str(GROUP_SIZE))),
    )
}


def is_quantized(model: str) -> bool:
    """True for a checkpoint folder that is already quantized (its config says how)."""
    config = Path(model) / "config.json"
    if not config.is_file():
        return False
    try:
        return "quantization_config" in json.loads(config.read_text())
    except (OSError, json.JSONDecodeError):
        return False


def choices(model: str, models_dir: str | Path | None = None) -> list[tuple[str, str]]:
    """(label, key) pairs for a dropdown: MODEL's variants (a quantized MODEL is offered only
    as it is), then each checkpoint folder in `models_dir` (its key is its path)."""
    if is_quantized(model):
        own = [(f"as given ({Path(model).name}, quantized)", "fp")]
    else:
        own = [(v.label, v.key) for v in VARIANTS.values()]
    return own + [(label, str(path)) for label, path in find_checkpoints(models_dir)] if models_dir else own


def find_checkpoints(folder: str | Path, depth: int = 3) -> list[tuple[str, Path]]:
    """(label, folder) for every labkit checkpoint (a config.json with a "labkit" record: the
    output of `labkit lite`, `prune` or `distill`) in `folder`, up to `depth` levels down."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise UserError(f"--models-dir {folder}: no such folder")
    found = []
    for config in sorted(root.glob("config.json")) + sorted(
            p for d in range(1, depth + 1) for p in root.glob("/".join(["*"] * d) + "/config.json")):
        try:
            record = json.loads(config.read_text()).get("labkit")
        except (OSError, json.JSONDecodeError, AttributeError):
            continue
        if isinstance(record, dict):
            name = config.parent.relative_to(root).as_posix() if config.parent != root else root.name
            found.append((f"{name} ({record.get('method', 'labkit')})", config.parent.resolve()))
    return sorted(found)


def spec_for(model: str, key: str) -> str | None:
    """The MODEL spec of a choice if it exists already (None: a variant not quantized yet)."""
    if key not in VARIANTS:
        return key
    if key == "fp" or is_quantized(model):
        return model
    out = variant_dir(model, key)
    return str(out) if (out / "config.json").is_file() else None


def eval_file(model: str, key: str) -> Path:
    """Where a choice's `labkit eval --json` result is cached: next to its checkpoint."""
    spec = spec_for(model, key) or str(variant_dir(model, key))
    if Path(spec).is_dir():
        return Path(spec) / "eval.json"
    return variant_dir(model, key).with_name(f"{key}-eval.json")   # a hub id or 'embedded'


def eval_command(spec: str, max_tokens: int) -> list[str]:
    return [sys.executable, "-m", "labkit", "eval", spec, "--json", "--max-tokens", str(max_tokens)]


def variant_dir(model: str, key: str) -> Path:
    """Where the `key` variant of `model` is cached: one folder per (model, variant)."""
    ident = model if model == "embedded" else str(Path(model).expanduser().resolve()) if Path(model).exists() else model
    digest = hashlib.sha1(ident.encode()).hexdigest()[:10]
    name = Path(ident).name.replace(":", "_") or "model"
    return cache_dir() / "chat" / f"{name}-{digest}" / key


def lite_command(model: str, key: str, work_dir: Path) -> list[str]:
    """The `labkit lite` command line that builds a variant."""
    v = VARIANTS[key]
    method, *rest = v.lite_args
    return [sys.executable, "-m", "labkit", "lite", method, model, *rest, "--work-dir", str(work_dir)]


def ensure(model: str, key: str, progress: Callable[[str], None] | None = None) -> str:
    """The model spec to load for choice `key`: MODEL itself, a checkpoint folder, or a
    cached quantized folder (made now if needed; `progress` gets `labkit lite`'s lines)."""
    if key not in VARIANTS and not (Path(key) / "config.json").is_file():
        raise UserError(f"unknown variant {key!r}; choose one of {', '.join(VARIANTS)} or a checkpoint folder")
    if (spec := spec_for(model, key)) is not None:
        return spec
    out = variant_dir(model, key)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    cmd = lite_command(model, key, tmp)
    lines = run_with_progress(cmd, progress)
    if lines is None or not (tmp / "config.json").is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"quantizing {model} to {key} failed ({' '.join(cmd[2:])}): {(lines or ['no output'])[-1]}")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return str(out)


def run_with_progress(cmd: list[str], progress: Callable[[str], None] | None = None) -> list[str] | None:
    """Run a child process, handing each line of its output (progress bars redraw with a
    carriage return: each redraw is a line) to `progress`. Returns the lines, or None if it failed."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, part = [], ""
    for chunk in iter(lambda: proc.stdout.read(256), ""):
        *done, part = re.split(r"[\r\n]+", part + chunk)
        for line in filter(None, (d.strip() for d in done)):
            lines.append(line)
            if progress:
                progress(line)
    lines += [part.strip()] if part.strip() else []
    return lines if proc.wait() == 0 else None
