"""Small helpers shared by the command modules: the MODEL argument and JSON output."""
from __future__ import annotations

import argparse
import json
import sys


def add_model_argument(parser: argparse.ArgumentParser, default: str = "embedded") -> None:
    parser.add_argument("model", nargs="?", default=default, metavar="MODEL",
                        help="'embedded' (default), a local Hugging Face folder, or a hub id")


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def emit(result: dict, as_json: bool, table: str) -> None:
    """Print the JSON object or the human table: never both on stdout."""
    print(json.dumps(result) if as_json else table)


def progress(iterable, desc: str, enabled: bool = True):
    """A tqdm bar on stderr (silent when not wanted)."""
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, file=sys.stderr, leave=False)
