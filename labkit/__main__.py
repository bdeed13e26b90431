"""`python -m labkit ...`: the same as the `labkit` command."""
import os
import sys

from labkit.cli import main

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # holds labkit/ and, in a checkout, kernels/


def drop_checkout_root(path: list[str]) -> list[str]:
    """sys.path without the labkit checkout's root.

    `python -m` puts the current folder first on sys.path. In a checkout that makes kernels/
    (installed as labkit.kernels) importable under its folder name, the name of a Hugging
    Face package that transformers probes for, and the probe then fails on kernels/'s guard.
    labkit itself is already imported and finds its modules through labkit.__path__. Only a
    checkout (a folder with pyproject.toml beside labkit/) is dropped, never site-packages.
    """
    if not os.path.isfile(os.path.join(CHECKOUT, "pyproject.toml")):
        return path
    return [entry for entry in path if os.path.abspath(entry or os.curdir) != CHECKOUT]


if __name__ == "__main__":
    sys.path[:] = drop_checkout_root(sys.path)
    sys.exit(main())
