"""`labkit bench kernels|quant|prune|distill|engine|serve [...]`: benchmarks are scripts, not timed tests.

Each suite prints a table (or one JSON object with --json) and names its device.
"""
from __future__ import annotations

import argparse
import importlib

from labkit.errors import UserError

SUITES = {
    "kernels": "labkit.kernels.bench",
    "quant": "labkit.quant.bench",
    "prune": "labkit.prune.bench",
    "distill": "labkit.distill.bench",
    "engine": "labkit.engine.bench",
    "serve": "labkit.serve.bench",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", choices=sorted(SUITES), help="what to measure")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options of the suite (see labkit bench SUITE --help)")


def run(args) -> int:
    try:
        module = importlib.import_module(SUITES[args.suite])
    except ModuleNotFoundError as e:
        raise UserError(f"the {args.suite} benchmark is not available: {e}") from e
    return module.main(args.rest)
