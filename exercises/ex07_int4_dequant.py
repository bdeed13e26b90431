"""Exercise 07a (chapter 07): dequantize one packed int4 word the way a GPU kernel does.

Then run the check in notebook 07, or:

    labkit grade ex07_int4_dequant --impl exercises/ex07_int4_dequant.py

A word of `qweight` (docs/internals.md) holds 8 columns of one row of W.T: nibble i
(bits 4i .. 4i + 3) holds column 8j + AWQ_ORDER[i], AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7].
The weight is (q - z) * s with the zero point z packed the same way in `qzeros` and one
fp16 scale per column. Words are int32: a word with bit 31 set is negative in Python.

Kernels avoid int -> float conversion instructions (slow on GPUs) with a bit trick: the
float32 whose bits are 0x4B000000 | q (for 0 <= q < 2**23) is exactly 2**23 + q.
Leave the caller's list of scales as it is.
"""
from __future__ import annotations

AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


def column_nibble(c: int) -> int:
    """The nibble index (0..7) of a word that holds column 8j + c, for c in 0..7."""
    raise NotImplementedError(
        "write column_nibble (which nibble holds a column) in exercises/ex07_int4_dequant.py; "
        "notebook 07, section 'The int4 word, as a kernel sees it', explains it")


def code_to_float(q: int) -> float:
    """q (an integer in [0, 2**23)) as a float, by building the bits 0x4B000000 | q, reading them
    as a float32 (numpy: np.array(bits, np.uint32).view(np.float32)) and subtracting 2**23."""
    raise NotImplementedError(
        "write code_to_float (the 0x4B000000 float trick) in exercises/ex07_int4_dequant.py; "
        "notebook 07, section 'The int4 word, as a kernel sees it', explains it")


def dequantize_word(word: int, zero_word: int, scales: list[float]) -> list[float]:
    """The 8 weights (q - z) * s of columns 8j .. 8j + 7 (in column order) of one row, from
    its packed word, the packed zero points of its group, and the 8 scales of those columns."""
    raise NotImplementedError(
        "write dequantize_word (the 8 weights of one packed word) in exercises/ex07_int4_dequant.py; "
        "notebook 07, section 'The int4 word, as a kernel sees it', explains it")
