"""Checks for exercise 06: block allocator with reference counts, the prefix hash chain, slot mapping.

The references are the engine's own (labkit.engine.block_manager.block_hash)."""
from __future__ import annotations

import random

from labkit.engine.block_manager import block_hash
from labkit.grading import check


def _reference_hashes(tokens: list[int], bs: int) -> list[int]:
    out, prev = [], None
    for i in range(len(tokens) // bs):
        prev = block_hash(prev, tokens[i * bs:(i + 1) * bs])
        out.append(prev)
    return out


@check(points=2)
def allocator_hands_out_distinct_blocks(impl):
    alloc = impl.BlockAllocator(6)
    assert alloc.num_free == 6, f"a new allocator of 6 blocks should have num_free 6, got {alloc.num_free}"
    got = [alloc.allocate() for _ in range(6)]
    assert sorted(got) == list(range(6)), f"6 allocations should return the ids 0..5 once each, got {got}"
    assert alloc.num_free == 0, f"after taking every block num_free should be 0, got {alloc.num_free}"
    assert all(alloc.ref_count(b) == 1 for b in got), "a freshly allocated block is held once (ref_count 1)"
    try:
        alloc.allocate()
    except RuntimeError:
        pass
    except Exception as e:
        raise AssertionError(f"allocate() with no free block raised {type(e).__name__}; raise RuntimeError "
                             "(a clear 'out of blocks' the scheduler can act on, by preempting)") from None
    else:
        raise AssertionError("allocate() with no free block should raise RuntimeError (the scheduler preempts then)")


@check(points=3)
def allocator_counts_references(impl):
    alloc = impl.BlockAllocator(4)
    a, b = alloc.allocate(), alloc.allocate()
    alloc.share(a)                       # a second request uses block a
    assert alloc.ref_count(a) == 2, f"after share() the block is held twice, got ref_count {alloc.ref_count(a)}"
    alloc.share(a)                       # and a third
    assert alloc.ref_count(a) == 3, f"after a second share() the block is held 3 times, got {alloc.ref_count(a)}"
    alloc.free(a)
    assert alloc.ref_count(a) == 2 and alloc.num_free == 2, (
        "freeing a shared block once must keep it: another request still reads its K/V "
        f"(ref_count {alloc.ref_count(a)}, num_free {alloc.num_free}, expected 2 and 2)")
    alloc.free(a)
    assert alloc.ref_count(a) == 1 and alloc.num_free == 2, (
        "freeing a shared block once must keep it: the other request still reads its K/V "
        f"(ref_count {alloc.ref_count(a)}, num_free {alloc.num_free}, expected 1 and 2)")
    alloc.free(a)
    assert alloc.ref_count(a) == 0 and alloc.num_free == 3, "the last free() returns the block to the free list"
    alloc.free(b)
    assert alloc.num_free == 4, f"every block is free again: num_free should be 4, got {alloc.num_free}"
    again = {alloc.allocate() for _ in range(4)}
    assert again == {0, 1, 2, 3}, f"freed blocks can be allocated again, got {sorted(again)}"


def _raises(call, error: type[Exception]) -> bool:
    try:
        call()
    except error:
        return True
    return False


@check(points=1)
def allocator_refuses_double_free(impl):
    alloc = impl.BlockAllocator(2)
    a = alloc.allocate()
    alloc.free(a)
    assert _raises(lambda: alloc.free(a), ValueError), (
        "freeing a block that is already free should raise ValueError (a double free would hand the same "
        "block to two requests)")
    assert alloc.num_free == 2 and alloc.ref_count(a) == 0, (
        f"a refused free() must change nothing: num_free {alloc.num_free} (expected 2), "
        f"ref_count {alloc.ref_count(a)} (expected 0). Check before you decrement")


@check(points=1)
def allocator_refuses_to_share_a_free_block(impl):
    alloc = impl.BlockAllocator(3)
    assert _raises(lambda: alloc.share(1), ValueError), (
        "share() of a block nobody holds should raise ValueError: a prefix-cache hit on a freed block would read "
        "K/V that another request may overwrite")
    assert alloc.ref_count(1) == 0 and alloc.num_free == 3, "a refused share() must leave the block free"
    one = impl.BlockAllocator(1)   # the smallest pool: one block, taken, then none
    b = one.allocate()
    assert one.num_free == 0 and _raises(one.allocate, RuntimeError), "a pool of 1 block has nothing left after one allocate()"
    one.free(b)
    assert one.allocate() == b, "the single block, freed, is handed out again"


@check(points=3)
def hash_chain_matches_reference(impl):
    rng = random.Random(0)
    for n, bs in ((48, 16), (50, 16), (7, 4), (3, 4), (32, 32), (0, 16)):   # exact fits, partial, none, empty
        tokens = [rng.randrange(50000) for _ in range(n)]
        got = impl.block_hashes(tokens, bs)
        want = _reference_hashes(tokens, bs)
        assert isinstance(got, list), f"block_hashes should return a list, got {type(got).__name__}"
        if len(got) != len(want):
            raise AssertionError(f"{n} tokens in blocks of {bs} have {len(want)} full blocks, got {len(got)} hashes"
                                 + (": a partial last block has no hash (its content is still growing)"
                                    if len(got) == -(-n // bs) else ""))
        if got != want:
            plain = [hash((None, tuple(tokens[i * bs:(i + 1) * bs]))) for i in range(n // bs)]
            hint = (" Chain them: h_i = hash((h_{i-1}, tuple(block_i))), so a hash names the whole prefix."
                    if got == plain or got[1:] == plain[1:] else "")
            raise AssertionError(f"hashes differ from h_i = hash((h_(i-1), tuple(block_i))) with h_(-1) = None.{hint}")


@check(points=2)
def hash_names_the_whole_prefix(impl):
    block = [11, 12, 13, 14]
    a = impl.block_hashes([1, 2, 3, 4] + block, 4)
    b = impl.block_hashes([9, 9, 9, 9] + block, 4)
    assert a[1] != b[1], ("the same 4 tokens after a different first block got the same hash: the prefix "
                          "cache would serve K/V computed for another context. Chain each hash to the previous one.")
    assert impl.block_hashes([1, 2, 3, 4] + block + [5], 4) == a, "appending a partial block must not change the hashes"


@check(points=2)
def slot_mapping_follows_the_block_table(impl):
    table = [7, 2, 9]
    got = impl.slot_mapping(table, 0, 10, 4)
    want = [28, 29, 30, 31, 8, 9, 10, 11, 36, 37]
    if got != want:
        hint = ""
        if got == [table[p // 4] + p % 4 for p in range(10)]:
            hint = " A block holds block_size slots: multiply the block id by block_size."
        elif got == list(range(10)):
            hint = " Look the block up in the block table: the blocks are not contiguous."
        raise AssertionError(f"slot_mapping([7, 2, 9], 0, 10, 4) should be {want}, got {got}.{hint}")
    assert impl.slot_mapping(table, 5, 3, 4) == [9, 10, 11], "start in the middle: tokens 5, 6, 7 are in block 2"
    assert impl.slot_mapping(table, 4, 4, 4) == [8, 9, 10, 11], \
        "start exactly at a block boundary: tokens 4..7 fill block 2 (slots 8..11)"
    assert impl.slot_mapping(table, 3, 0, 4) == [], "count 0: no slots"
    got = impl.slot_mapping([3, 0], 14, 4, 16)   # a decode-sized step that crosses from block 3 into block 0
    assert got == [62, 63, 0, 1], (f"slot_mapping([3, 0], 14, 4, block_size=16) should be [62, 63, 0, 1], got {got}: "
                                   "use the block_size argument")
