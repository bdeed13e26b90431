"""Exercise 04b (chapter 04): pack and unpack int4 weights in the AutoAWQ "gemm" layout.

Then run the check in notebook 04, or:

    labkit grade ex04_int4_packing --impl exercises/ex04_int4_packing.py

Eight 4-bit values share one int32 word. The layout (docs/internals.md) is AutoAWQ's, so
labkit's checkpoints load in vLLM and LMDeploy and the GPU kernels read them as stored:

- values [R, C] (C a multiple of 8) become words [R, C // 8]; word j of a row holds
  columns 8j .. 8j + 7;
- nibble i of a word (bits 4i .. 4i + 3) holds column 8j + AWQ_ORDER[i], with
  AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7] (even columns in the low 16 bits, odd in the high);
- the word is stored as a signed int32: when bit 31 is set the value is negative.

Values may come in any integer dtype (uint8 too); neither function modifies its input.
"""
from __future__ import annotations

import torch

AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


def pack_int4(values: torch.Tensor) -> torch.Tensor:
    """Integers in [0, 15], shape [R, C] -> int32 [R, C // 8] in the AWQ order."""
    raise NotImplementedError(
        "write pack_int4 (eight 4-bit values per int32 word, AWQ order) in exercises/ex04_int4_packing.py; "
        "notebook 04, section '3 · Packing int4', explains it")


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """int32 [R, C // 8] -> integers [R, C] in [0, 15] (the inverse of pack_int4)."""
    raise NotImplementedError(
        "write unpack_int4 (the inverse of pack_int4) in exercises/ex04_int4_packing.py; "
        "notebook 04, section '3 · Packing int4', explains it")
