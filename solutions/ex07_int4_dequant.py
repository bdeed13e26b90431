"""Solution to exercise 07a: dequantize one packed int4 word the way a GPU kernel does."""
from __future__ import annotations

import numpy as np

AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


def column_nibble(c: int) -> int:
    """The nibble index (0..7) of a word that holds column 8j + c, for c in 0..7."""
    return AWQ_ORDER.index(c)


def code_to_float(q: int) -> float:
    """q as a float via the bits 0x4B000000 | q (the float 2**23 + q), minus 2**23."""
    bits = np.array(0x4B000000 | q, dtype=np.uint32)
    return float(bits.view(np.float32) - np.float32(2**23))


def dequantize_word(word: int, zero_word: int, scales: list[float]) -> list[float]:
    """The 8 weights (q - z) * s of columns 8j .. 8j + 7 of one row."""
    out = []
    for c in range(8):
        shift = 4 * column_nibble(c)
        q = (word >> shift) & 0xF  # Python's >> on a negative int keeps the low bits right
        z = (zero_word >> shift) & 0xF
        out.append((code_to_float(q) - code_to_float(z)) * scales[c])
    return out
