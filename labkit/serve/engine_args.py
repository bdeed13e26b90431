"""The engine options every front end takes (API server, chat page, serving benchmark).

One definition, so `labkit serve api_server`, `labkit chat` and `labkit bench serve` spell
them alike (LMDeploy's names where it has them) and build the engine the same way.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from labkit.errors import UserError


def log(line: str) -> None:
    print(f"labkit: {line}", file=sys.stderr, flush=True)


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine")
    g.add_argument("--backend", choices=["torch", "numba"], default="torch",
                   help="torch: plain PyTorch (any device); numba: the CUDA kernels")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if present, else cpu)")
    g.add_argument("--quant-policy", type=int, choices=[0, 4, 8], default=0,
                   help="KV-cache quantization: 0 none, 8 int8, 4 int4")
    g.add_argument("--max-batch-size", type=int, default=32, help="most sequences decoded together")
    g.add_argument("--cache-max-entry-count", type=float, default=0.5,
                   help="fraction of free memory given to the KV cache")
    g.add_argument("--max-model-len", type=int, default=None, help="longest prompt + answer (default: the model's)")
    g.add_argument("--weights", choices=["fp32", "bf16", "int8", "int4"], default=None,
                   help="convert a full-precision model at load time (int8/int4: round-to-nearest, on a "
                        "CPU PyTorch's packed kernels); default: as stored. A quantized checkpoint always "
                        "runs as stored (on a CPU repacked for the packed int4/int8 kernels)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the decode step; each kind of step compiles at start-up")
    g.add_argument("--tp", type=int, default=1,
                   help="tensor parallelism: split the model over this many GPUs (CPU processes on a CPU)")


def engine_kwargs(args: argparse.Namespace) -> dict:
    """The LLM(...) keyword arguments chosen on the command line."""
    if args.max_batch_size < 1:
        raise UserError(f"--max-batch-size must be >= 1, got {args.max_batch_size}")
    if not 0 < args.cache_max_entry_count <= 1:
        raise UserError(f"--cache-max-entry-count must be in (0, 1], got {args.cache_max_entry_count}")
    if args.tp < 1:
        raise UserError(f"--tp must be >= 1, got {args.tp}")
    return {"tp": args.tp, "backend": args.backend, "device": args.device, "quant_policy": args.quant_policy,
            "max_batch_size": args.max_batch_size, "cache_max_entry_count": args.cache_max_entry_count,
            "max_model_len": args.max_model_len, "weights": args.weights, "compile": args.compile}


def build_engine(model: str, progress: Callable[[str], None] | None = log, **kwargs):
    """`LLM(model, **kwargs)`, with a wrong model path or option reported as one line; a
    compiled engine compiles every kind of step before it returns (`progress` gets a line
    for each), so no request waits for a compile."""
    from labkit.engine import LLM

    try:
        llm = LLM(model=model, **kwargs)
    except (FileNotFoundError, ValueError, OSError) as e:
        raise UserError(f"cannot load {model!r}: {e}") from e
    llm.warmup(progress)
    return llm
