"""`python -m labkit ...`: the same as the `labkit` command."""
import os
import sys

from labkit.cli import main

MARKER = "import labkit.kernels, not kernels"  # in kernels/__init__.py of a labkit checkout


def drop_checkout_root(path: list[str]) -> list[str]:
    """sys.path without the labkit checkout's root.

    `python -m` puts the current folder first on sys.path. In a checkout that makes kernels/
    (installed as labkit.kernels) importable as a top-level `kernels`, the name of a Hugging
    Face package that transformers probes for, and the probe then fails on kernels/'s guard.
    labkit itself is already imported and finds its modules through labkit.__path__.
    """
    def is_root(entry: str) -> bool:
        init = os.path.join(os.path.abspath(entry or os.curdir), "kernels", "__init__.py")
        try:
            with open(init, encoding="utf-8") as f:
                return MARKER in f.read()
        except OSError:
            return False

    return [entry for entry in path if not is_root(entry)]


if __name__ == "__main__":
    sys.path[:] = drop_checkout_root(sys.path)
    sys.exit(main())
