"""The chat page's model selector: full precision, W8, W4 AWQ, quantized once and cached.

A variant is a checkpoint folder `LLM(model=...)` accepts. Quantizing takes a while (AWQ
runs calibration), so the first use writes the folder into the labkit cache
(`labkit.paths.cache_dir() / "chat"`) and every later use, in this process or the next,
loads it from there. The folder is written under a temporary name and renamed when
complete, so an interrupted run never leaves a half checkpoint that looks finished.

Quantization itself is `labkit lite ...` (the same command a learner runs), started as a
child process: it keeps the calibration's memory out of the serving process and shows the
exact command to reproduce a variant by hand.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

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


def choices(model: str) -> list[tuple[str, str]]:
    """(label, key) pairs for a dropdown: a quantized MODEL is offered only as it is."""
    if is_quantized(model):
        return [(f"as given ({Path(model).name}, quantized)", "fp")]
    return [(v.label, v.key) for v in VARIANTS.values()]


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


def ensure(model: str, key: str) -> str:
    """The model spec to load for variant `key`: MODEL itself, or a cached quantized folder."""
    if key not in VARIANTS:
        raise UserError(f"unknown variant {key!r}; choose one of {', '.join(VARIANTS)}")
    if key == "fp" or is_quantized(model):
        return model
    out = variant_dir(model, key)
    if (out / "config.json").is_file():
        return str(out)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    cmd = lite_command(model, key, tmp)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not (tmp / "config.json").is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise UserError(f"quantizing {model} to {key} failed ({' '.join(cmd[2:])}): {last[0]}")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return str(out)
