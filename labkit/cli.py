"""`labkit ...`: one entry point, one module per command.

Each command lives next to the code it drives and exposes `add_arguments(parser)` and
`run(args) -> int`. Only the chosen command's module is imported, so `labkit --help` is
instant and a command's heavy imports (torch, gradio) are paid only when it runs.
Errors a user can fix (`UserError`, bad arguments) print one line and exit non-zero.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from labkit.errors import UserError

# name -> (module, one-line help). Names follow LMDeploy's where it has one.
COMMANDS = {
    "chat": ("labkit.chat", "chat with a model (Gradio page; --cli for the terminal)"),
    "serve": ("labkit.serve.cli", "OpenAI-compatible API server: labkit serve api_server [MODEL]"),
    "lite": ("labkit.quant.cli", "quantize a model: auto_awq | rtn | smooth_quant"),
    "prune": ("labkit.prune.cli", "prune a model"),
    "distill": ("labkit.distill.cli", "distill a smaller model from a larger one"),
    "eval": ("labkit.eval.cli", "perplexity, KL and top-1 agreement on the evaluation text"),
    "bench": ("labkit.bench", "benchmarks: kernels | quant | prune | distill | engine | serve"),
    "grade": ("labkit.grading.cli", "grade exercises"),
    "info": ("labkit.info", "versions, devices, backends, model cache"),
}


def _exists(module: str) -> bool:
    """Whether labkit ships this module, without importing its package (which may import torch)."""
    path = Path(__file__).parent.joinpath(*module.split(".")[1:])
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _available() -> dict[str, tuple[str, str]]:
    return {name: spec for name, spec in COMMANDS.items() if _exists(spec[0])}


def usage() -> str:
    rows = "\n".join(f"  {name:<9} {help_}" for name, (_, help_) in _available().items())
    return ("usage: labkit COMMAND [ARGS]   (labkit COMMAND --help for its options)\n\n"
            f"commands:\n{rows}\n\nMODEL is 'embedded' (default), a local folder, or a hub id.")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from labkit import __version__

        print(f"labkit {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in _available():
        print(f"labkit: error: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(_available()[name][0])
    parser = argparse.ArgumentParser(prog=f"labkit {name}", description=_available()[name][1])
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.run(args) or 0)
    except UserError as e:
        print(f"labkit {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
