"""Exercise 06 (chapter 06): the bookkeeping of a paged KV cache.

Then run the checks in notebook 06, or:

    labkit grade ex06_kv_cache --impl exercises/ex06_kv_cache.py

The engine cuts the KV cache into blocks of `block_size` tokens (labkit.engine.block_manager).
A request holds a *block table*: logical block i of its tokens lives in physical block
`block_table[i]`, anywhere in the cache. Three pieces of that machinery:

1. `BlockAllocator`: a free list with reference counts. Two requests that start with the same
   tokens can share the blocks that hold them; a block is free again only when its last user
   lets go.
2. `block_hashes`: the prefix-cache key of every full block, chained: block i's hash covers
   its own tokens and, through the hash of block i - 1, every token before it.
3. `slot_mapping`: where in the cache each new token's K and V go.
"""
from __future__ import annotations


class BlockAllocator:
    """Hands out block ids 0 .. num_blocks - 1 and takes them back, with reference counts."""

    def __init__(self, num_blocks: int):
        raise NotImplementedError(
            "write BlockAllocator.__init__ (the free list and the reference counts) in exercises/ex06_kv_cache.py; "
            "notebook 06, section '4 · Exercise 06: the block manager's three pieces', explains it")

    @property
    def num_free(self) -> int:
        """How many blocks no request holds."""
        raise NotImplementedError(
            "write BlockAllocator.num_free (how many blocks are free) in exercises/ex06_kv_cache.py; "
            "notebook 06, section '4 · Exercise 06: the block manager's three pieces', explains it")

    def ref_count(self, block: int) -> int:
        """How many requests hold `block` (0: it is free)."""
        raise NotImplementedError(
            "write BlockAllocator.ref_count (how many requests hold a block) in exercises/ex06_kv_cache.py; "
            "notebook 06, section '4 · Exercise 06: the block manager's three pieces', explains it")

    def allocate(self) -> int:
        """A free block, now held once. RuntimeError when every block is taken."""
        raise NotImplementedError(
            "write BlockAllocator.allocate (take a free block) in exercises/ex06_kv_cache.py; "
            "notebook 06, section '4 · Exercise 06: the block manager's three pieces', explains it")

    def share(self, block: int) -> None:
        """One more request uses a block that is already held (ValueError if it is free)."""
        raise NotImplementedError(
            "write BlockAllocator.share (one more user of a held block) in exercises/ex06_kv_cache.py; "
            "notebook 06, section '4 · Exercise 06: the block manager's three pieces', explains it")

    def free(self, block: int) -> None:
        """One user lets go; at zero users the block is free again. ValueError for a free block."""
        raise NotImplementedError(
            "write BlockAllocator.free (one user lets go) in exercises/ex06_kv_cache.py; "
            "notebook 06, section '4 · Exercise 06: the block manager's three pieces', explains it")


def block_hashes(token_ids: list[int], block_size: int) -> list[int]:
    """The chained hash of every *full* block of `token_ids` (a partial last block has none):

        h_0 = hash((None, tuple(block_0)))
        h_i = hash((h_{i-1}, tuple(block_i)))

    Python's built-in `hash` of a tuple of ints is fine here.
    """
    raise NotImplementedError(
        "write block_hashes (the chained hash of every full block) in exercises/ex06_kv_cache.py; "
        "notebook 06, section '4 · Exercise 06: the block manager's three pieces', explains it")


def slot_mapping(block_table: list[int], start: int, count: int, block_size: int) -> list[int]:
    """Cache slots of a sequence's tokens start .. start + count - 1: token p sits in physical
    block block_table[p // block_size] at offset p % block_size, i.e. slot
    block_table[p // block_size] * block_size + p % block_size."""
    raise NotImplementedError(
        "write slot_mapping (the cache slot of each token) in exercises/ex06_kv_cache.py; "
        "notebook 06, section '4 · Exercise 06: the block manager's three pieces', explains it")
