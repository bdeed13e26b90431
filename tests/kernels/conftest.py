"""Kernel tests run on a GPU when there is one, else in Numba's CUDA simulator.

The simulator must be chosen before numba.cuda is first imported, hence the environment
variable here. It runs every CUDA thread as a Python thread; a short thread switch
interval makes kernels that wait at barriers (syncthreads) run several times faster.
"""
import os
import sys

import pytest


def _has_gpu() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:
        return False


if not _has_gpu():
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
sys.setswitchinterval(1e-4)


@pytest.fixture
def seed() -> int:
    """A fresh seed per test: new random inputs every run, reproducible from the seed printed."""
    value = int.from_bytes(os.urandom(4), "little")
    print(f"seed={value}")
    return value
