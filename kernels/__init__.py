"""Numba CUDA kernels, installed as `labkit.kernels`. Imports nothing from labkit."""

if __name__ == "kernels":  # imported from the repo root as a top-level module
    raise ImportError("import labkit.kernels, not kernels: a top-level 'kernels' clashes with Hugging Face's package")
