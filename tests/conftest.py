"""Shared fixtures. Tests run offline, on CPU; Numba kernels run in the CUDA simulator."""
import os
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
try:
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
except ImportError:
    pass
# The simulator runs a block's threads as Python threads; frequent switches make syncthreads cheap.
sys.setswitchinterval(1e-4)


@pytest.fixture(scope="session")
def embedded():
    """(model, tokenizer) of the embedded SmolLM2-135M in float32."""
    from labkit.loading import load_model

    return load_model("embedded")
