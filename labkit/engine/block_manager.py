"""The paged KV cache's bookkeeping: which physical block holds which tokens of which request.

The cache is cut into `num_blocks` blocks of `block_size` tokens. A request owns a *block
table* (logical block i -> physical block id), so its K/V need not be contiguous and no memory
is reserved for tokens it has not produced yet: the fragmentation of a contiguous cache is
gone, and a block is the only unit ever allocated.

Prefix caching: once a block is full and its K/V are computed, it is *published* under a hash
of its tokens chained with the hash of the block before it, so a hash names the whole prefix
up to the block's end, not just its 16 tokens. A new request whose prompt starts with the same
tokens (the history of a chat, a shared system prompt) takes those blocks instead of
recomputing them; a reference count says how many requests use a block.

A block whose count drops to zero goes to the end of the free list but keeps its content and
its hash: it is still a cache hit until it is handed out again. Allocation takes from the
front, so the least recently released block is evicted first (LRU).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from labkit.engine.sequence import Sequence


def block_hash(prev: int | None, tokens) -> int:
    """The identity of a full block: its tokens and (through `prev`) every token before them."""
    return hash((prev, tuple(tokens)))


@dataclass
class Block:
    id: int
    ref_count: int = 0
    hash: int | None = None        # set while the block is published in the prefix cache
    token_ids: tuple = ()          # kept to rule out hash collisions


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need at least one block of at least one token, got {num_blocks} x {block_size}")
        self.block_size, self.enable_prefix_caching = block_size, enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))  # oldest first
        self.cached: dict[int, int] = {}   # hash -> block id
        self.hit_tokens = 0                # prompt tokens served from the prefix cache, all time

    # ------------------------------------------------------------------ counts
    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free(self) -> int:
        """Blocks no request holds (some still carry cached content until reused)."""
        return len(self.free)

    @property
    def num_cached_free(self) -> int:
        return sum(self.blocks[b].hash is not None for b in self.free)

    # ------------------------------------------------------------------ one block
    def _take(self) -> int:
        """A free block for new content: the least recently released one, its cached content evicted."""
        bid, _ = self.free.popitem(last=False)
        block = self.blocks[bid]
        if block.hash is not None and self.cached.get(block.hash) == bid:
            del self.cached[block.hash]
        block.hash, block.token_ids, block.ref_count = None, (), 1
        return bid

    def _ref(self, bid: int) -> None:
        block = self.blocks[bid]
        if block.ref_count == 0:
            del self.free[bid]
        block.ref_count += 1

    def _unref(self, bid: int) -> None:
        block = self.blocks[bid]
        block.ref_count -= 1
        if block.ref_count == 0:
            self.free[bid] = None   # most recently released: evicted last

    # ------------------------------------------------------------------ prefix cache
    def match_prefix(self, token_ids: list[int]) -> list[int]:
        """Cached blocks that hold the longest run of full blocks at the start of `token_ids`.

        The last token is never matched: its forward pass must run to give the logits of the
        next token, so at most (len - 1) // block_size blocks can hit.
        """
        if not self.enable_prefix_caching:
            return []
        hits, prev, bs = [], None, self.block_size
        for i in range((len(token_ids) - 1) // bs):
            chunk = tuple(token_ids[i * bs:(i + 1) * bs])
            prev = block_hash(prev, chunk)
            bid = self.cached.get(prev)
            if bid is None or self.blocks[bid].token_ids != chunk:
                break
            hits.append(bid)
        return hits

    def publish(self, seq: Sequence) -> None:
        """Hash the sequence's newly completed full blocks and offer them to other requests.

        Called after a step, so a block is published only once its K/V are really written.
        """
        bs = self.block_size
        while len(seq.block_hashes) < seq.num_computed // bs:
            i = len(seq.block_hashes)
            chunk = tuple(seq.token_ids[i * bs:(i + 1) * bs])
            h = block_hash(seq.block_hashes[-1] if seq.block_hashes else None, chunk)
            seq.block_hashes.append(h)
            block = self.blocks[seq.block_table[i]]
            if self.enable_prefix_caching and h not in self.cached and block.hash is None:
                block.hash, block.token_ids = h, chunk
                self.cached[h] = block.id

    # ------------------------------------------------------------------ a request's blocks
    def can_allocate(self, seq: Sequence, extra_tokens: int = 0) -> bool:
        """Enough blocks for all of `seq`'s tokens (+ `extra_tokens` reserved), prefix hits included?"""
        hits = self.match_prefix(seq.token_ids)
        fresh = seq.num_blocks(self.block_size, extra_tokens) - len(hits)
        idle_hits = sum(self.blocks[b].ref_count == 0 for b in hits)  # counted in num_free, but taken
        return fresh <= self.num_free - idle_hits

    def allocate(self, seq: Sequence, extra_tokens: int = 0) -> int:
        """Give `seq` its block table; returns how many of its tokens the prefix cache already holds."""
        assert not seq.block_table, f"{seq.request_id} already holds blocks"
        hits = self.match_prefix(seq.token_ids)
        for bid in hits:
            self._ref(bid)
        fresh = seq.num_blocks(self.block_size, extra_tokens) - len(hits)
        seq.block_table = hits + [self._take() for _ in range(fresh)]
        seq.block_hashes = [self.blocks[b].hash for b in hits]
        seq.num_computed = len(hits) * self.block_size
        self.hit_tokens += seq.num_computed
        return seq.num_computed

    def can_append(self, seq: Sequence) -> bool:
        """Room for the sequence's tokens: a new block is needed only when it crosses a block edge."""
        return len(seq.block_table) * self.block_size >= len(seq) or self.num_free > 0

    def append(self, seq: Sequence) -> None:
        if len(seq.block_table) * self.block_size < len(seq):
            seq.block_table.append(self._take())

    def release(self, seq: Sequence) -> None:
        """Drop the sequence's references. Tail blocks are released first, so they are evicted
        before the head blocks, which other requests are more likely to share."""
        for bid in reversed(seq.block_table):
            self._unref(bid)
        seq.block_table, seq.block_hashes, seq.num_computed = [], [], 0
