"""Checks for exercise 04b: int4 packing, against `labkit.kernels.packing` (the shared layout)."""
from __future__ import annotations

import torch

from labkit.grading import check
from labkit.kernels.packing import pack_int4, unpack_int4


def _values(rows: int = 6, cols: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 16, (rows, cols), generator=torch.Generator().manual_seed(seed))


def _sequential(values: torch.Tensor) -> torch.Tensor:
    """The tempting wrong layout: column 8j + i in nibble i."""
    v = values.to(torch.int64).reshape(values.shape[0], -1, 8)
    words = sum(v[:, :, i] << (4 * i) for i in range(8))
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def _sequential_unpack(packed: torch.Tensor) -> torch.Tensor:
    """The tempting wrong reading: nibble i as column 8j + i."""
    words = packed.to(torch.int64) & 0xFFFFFFFF
    return torch.stack([(words >> (4 * i)) & 0xF for i in range(8)], dim=-1).reshape(packed.shape[0], -1)


@check(points=1)
def pack_shape_and_dtype(impl):
    got = impl.pack_int4(_values())
    assert isinstance(got, torch.Tensor), "pack_int4 should return a tensor"
    assert tuple(got.shape) == (6, 4), f"[6, 32] values pack into [6, 32 // 8] = (6, 4) words, got {tuple(got.shape)}"
    assert got.dtype == torch.int32, f"packed words are int32, got {got.dtype}"


@check(points=3)
def pack_matches_awq_order(impl):
    # int64 as torch.randint gives, uint8 as codes are often stored, [1, 8]: a single word
    for seed, dtype, rows, cols in ((0, torch.int64, 6, 32), (1, torch.uint8, 6, 32), (2, torch.int32, 3, 64),
                                    (3, torch.int64, 1, 8)):
        values = _values(rows, cols, seed=seed).to(dtype)
        want = pack_int4(values)
        got = impl.pack_int4(values.clone())
        assert tuple(got.shape) == tuple(want.shape), f"[{rows}, {cols}] values pack into {tuple(want.shape)} words"
        got = got.to(torch.int32)
        if not torch.equal(got, want):
            if torch.equal(got, _sequential(values)):
                raise AssertionError("you put column 8j + i in nibble i; AWQ puts column 8j + AWQ_ORDER[i] in nibble i "
                                     "(AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7])")
            hint = (" Widen the values (e.g. .to(torch.int64)) before shifting: a uint8 shifted left by 8 or more "
                    "bits loses them." if dtype == torch.uint8 else "")
            raise AssertionError(f"{(got != want).sum().item()} of {want.numel()} words differ from the AWQ layout "
                                 f"({dtype} values [{rows}, {cols}]).{hint}")


@check(points=2)
def pack_handles_the_sign_bit(impl):
    values = torch.full((2, 8), 15)  # every nibble 0xF: the word is 0xFFFFFFFF, i.e. -1 as an int32
    got = impl.pack_int4(values)
    assert got.dtype == torch.int32 and got.flatten().tolist() == [-1, -1], \
        f"eight 15s should pack to 0xFFFFFFFF = -1 as int32, got {got.flatten().tolist()} ({got.dtype})"


@check(points=3)
def unpack_inverts_the_layout(impl):
    # the sign bit: -1 is eight 15s; -2**31 is 8 in the top nibble (column 7), zeros elsewhere
    got = impl.unpack_int4(torch.tensor([[-1, -2**31]], dtype=torch.int32))
    want = [15] * 8 + [0] * 7 + [8]
    assert isinstance(got, torch.Tensor) and got.flatten().long().tolist() == want, (
        f"the words [-1, -2**31] should unpack to {want}, got {getattr(got, 'tolist', lambda: got)()}: "
        "a negative int32 is a word with bit 31 set; mask each nibble with & 0xF")
    for seed in range(3):
        values = _values(rows=5, cols=64, seed=seed + 10)
        got = impl.unpack_int4(pack_int4(values))
        assert isinstance(got, torch.Tensor) and tuple(got.shape) == (5, 64), \
            f"unpack_int4 should return [R, C] = (5, 64), got {tuple(getattr(got, 'shape', ()))}"
        if not torch.equal(got.long(), values):
            if (got.long() < 0).any() or (got.long() > 15).any():
                raise AssertionError("values outside [0, 15] after unpacking: mask each nibble with & 0xF "
                                     "(a right shift keeps the higher nibbles, and the sign bit of a negative word)")
            if torch.equal(got.long(), _sequential_unpack(pack_int4(values))):
                raise AssertionError("you read column 8j + i from nibble i; AWQ keeps column 8j + AWQ_ORDER[i] "
                                     "in nibble i (AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7])")
            raise AssertionError(f"{(got.long() != values).sum().item()} values differ after unpacking an AWQ-packed tensor")


@check(points=1)
def round_trip(impl):
    values = _values(rows=3, cols=128, seed=42)
    packed = impl.pack_int4(values)
    words = packed.clone()
    got = impl.unpack_int4(packed)
    assert torch.equal(got.long(), values), "unpack_int4(pack_int4(v)) should give v back"
    assert torch.equal(unpack_int4(words).long(), values)
    assert torch.equal(values, _values(rows=3, cols=128, seed=42)) and torch.equal(packed, words), \
        "pack_int4 / unpack_int4 changed their input in place: the caller still needs it"
