"""Numba CUDA kernels, installed as `labkit.kernels` (never imported as a top-level `kernels`:
Hugging Face publishes a package of that name). Imports nothing from the rest of labkit.

Each kernel file reads the same way: reference (torch) -> kernel (Numba) -> launch -> check
-> bench. Without a GPU the kernels run in Numba's CUDA simulator (see launch.py).

- packing.py        the int4 layout shared by the quantizer and the kernels (pure torch)
- w4a16_gemv.py     int4 weights x one fp16 row, near the memory-bandwidth limit (optionally with
                    an RMSNorm or SiLU(gate) * up before and the residual add after, fused in)
- w4a16_gemm.py     int4 weights x 2..8 rows
- w4a16_tc.py       int4 weights x 1..32 rows on tensor cores (mma.sync)
- w4a16_tc_async.py the same, the weights staged in shared memory by cp.async (2..32 rows)
- dequant.py        int4 -> fp16 weights, for large batches (then cuBLAS)
- dispatch.py       w4a16_linear / w8a16_linear: the kernel for the number of rows
- w8a16_gemv.py     int8 weights x one fp16 row
- paged_attention.py  decode attention over a paged fp16 cache, split-K for long contexts (optionally
                    rotating q and the new K and writing the new K/V itself: NewTokens)
- kv_quant.py       int8/int4 KV cache: quantized writes and attention over the codes
- gemv_steps.py     the course's path from a naive GEMV to w4a16_gemv
- attention_steps.py  the course's path from a naive decode attention to paged_attention
- launch.py, ptx.py, splitk.py, measure.py   launch plumbing, PTX primitives, split-K, timing
- graph_capture.py  a launch sequence captured in a CUDA graph replays like eager launches
- bench.py          `labkit bench kernels`
"""
if __name__ != "labkit.kernels":  # e.g. found as a top-level module from the repository root
    raise ImportError(f"this folder is labkit.kernels, not {__name__!r}: a top-level 'kernels' clashes with "
                      "Hugging Face's package")

import os
import sys

import numpy as np
import torch

if not hasattr(np, "row_stack"):  # numba-cuda 0.30 still calls np.row_stack, removed in numpy 2.5
    np.row_stack = np.vstack

if "NUMBA_ENABLE_CUDASIM" not in os.environ and "numba.cuda" not in sys.modules and not torch.cuda.is_available():
    # No GPU: run kernels in Numba's CUDA simulator (correct, slow), chosen before any module here
    # imports numba.cuda, so that kernels and exercises run on any laptop.
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    if "numba" in sys.modules:
        from numba.core import config as _config

        _config.reload_config()
