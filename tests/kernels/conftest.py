"""Kernel tests run on a GPU when there is one, else in Numba's CUDA simulator (tests/conftest.py
selects it before numba.cuda is imported, and shortens the thread switch interval, which makes
simulated kernels that wait at barriers several times faster)."""
import os

import pytest


@pytest.fixture
def seed() -> int:
    """A fresh seed per test: new random inputs every run, reproducible from the seed printed."""
    value = int.from_bytes(os.urandom(4), "little")
    print(f"seed={value}")
    return value
