"""Checks for exercise 07a: dequantizing one packed int4 word, against labkit.kernels.packing."""
from __future__ import annotations

import torch

from labkit.grading import check
from labkit.kernels.packing import AWQ_REVERSE_ORDER, random_int4_layer, unpack_int4


def _rows(seed: int) -> list[tuple[int, int, list[float], list[float]]]:
    """(word, zero word, 8 scales, the 8 weights it must give) for every row of a random layer."""
    qweight, qzeros, scales = random_int4_layer(8, 64, 32, generator=torch.Generator().manual_seed(seed))
    q, z = unpack_int4(qweight).double(), unpack_int4(qzeros).double()
    s = scales.double()
    return [(int(qweight[k, 0]), int(qzeros[k // 32, 0]), s[k // 32].tolist(),
             ((q[k] - z[k // 32]) * s[k // 32]).tolist()) for k in range(64)]


def _close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= 1e-6 * (1 + abs(y)) for x, y in zip(a, b))


@check(points=1)
def nibble_of_each_column(impl):
    got = [impl.column_nibble(c) for c in range(8)]
    if got == list(range(8)):
        raise AssertionError("column 8j + c is not in nibble c: AWQ keeps even columns in the low 16 bits "
                             "(nibble i holds column AWQ_ORDER[i], AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7])")
    assert got == list(AWQ_REVERSE_ORDER), f"column_nibble(c) for c = 0..7 should be {list(AWQ_REVERSE_ORDER)}, got {got}"


@check(points=1)
def float_trick_gives_the_code(impl):
    for q in [*range(16), 255, 4095, 2**22 + 5]:
        got = impl.code_to_float(q)
        assert float(got) == float(q), (f"code_to_float({q}) gave {got}: the bits 0x4B000000 | q read as a float32 "
                                        f"are 2**23 + q, so subtracting 2**23 leaves q")


def _sign_bit_rows() -> list[tuple[int, int, list[float], list[float]]]:
    """Words with bit 31 set, as Python sees an int32: -1 is eight 15s; -2**31 is 8 in nibble 7 (column 7)."""
    scales = [0.5, 0.25, 1.0, 2.0, 0.125, 1.5, 0.75, 3.0]
    return [(-1, 0, scales, [15 * s for s in scales]),
            (-2**31, 0, scales, [0.0] * 7 + [8 * 3.0]),
            (0, -1, scales, [-15 * s for s in scales]),
            (-1, -2**31, scales, [15 * s for s in scales[:7]] + [7 * 3.0])]


@check(points=3)
def word_matches_the_packed_layout(impl):
    for word, zero_word, scales, want in _sign_bit_rows():
        mine = list(scales)
        try:
            got = [float(v) for v in impl.dequantize_word(word, zero_word, mine)]
        except OverflowError as e:
            raise AssertionError(f"word {word} raised {e!r}: a word with bit 31 set is a negative Python int; "
                                 "shift it and mask with & 0xF, no unsigned conversion needed") from None
        assert mine == scales, "dequantize_word changed the caller's list of scales"
        assert _close(got, want), (f"word {word} (zero word {zero_word}) should give {want}, got {got}: "
                                   "a negative word is one with bit 31 set; (word >> 4i) & 0xF reads nibble i")
    for seed in range(2):
        for word, zero_word, scales, want in _rows(seed):
            got = [float(v) for v in impl.dequantize_word(word, zero_word, list(scales))]
            if _close(got, want):
                continue
            nibbles = [(word >> (4 * c)) & 0xF for c in range(8)]
            zeros = [(zero_word >> (4 * c)) & 0xF for c in range(8)]
            if _close(got, [(q - z) * s for q, z, s in zip(nibbles, zeros, scales)]):
                raise AssertionError("you read column c from nibble c; in the AWQ layout it is in nibble "
                                     "column_nibble(c) (AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7])")
            if _close(got, [w / s for w, s in zip(want, scales)]):
                raise AssertionError("the weights are not scaled: multiply (q - z) by the column's scale")
            raise AssertionError(f"word {word} (zero word {zero_word}) should give {[round(w, 5) for w in want]}, "
                                 f"got {[round(v, 5) for v in got]}")
