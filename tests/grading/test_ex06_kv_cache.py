"""Exercise 06 (KV-cache bookkeeping): solutions score full marks, stubs zero, typical mistakes lose points.

Kinds of mistake covered: every parameter (block sizes 4, 16, 32; start and count),
contracts (RuntimeError when out of blocks, ValueError for a double free or sharing a free
block, and a refused call changes nothing), boundaries (exactly full blocks, a partial block,
no tokens, a pool of one block, a step crossing a block boundary); fixed token lists."""
import pytest

EXERCISE = "ex06_kv_cache"


def test_solution_full_marks_and_stub_zero(g):
    g.assert_full_and_zero(EXERCISE)


@pytest.mark.parametrize("old, new, check, hint", [
    # free() ignores the reference count: a shared block goes back while another request reads it
    ("        self.refs[block] -= 1\n        if self.refs[block] == 0:\n            self.free_list.append(block)",
     "        self.refs[block] = 0\n        self.free_list.append(block)", "allocator_counts_references", "still reads"),
    # no error on exhaustion: pop from an empty list raises IndexError, not RuntimeError
    ("        if not self.free_list:\n            raise RuntimeError(\"out of KV cache blocks\")\n", "",
     "allocator_hands_out_distinct_blocks", "RuntimeError"),
    # double free silently accepted
    ("        if self.refs[block] == 0:\n            raise ValueError(f\"block {block} is already free\")\n", "",
     "allocator_refuses_double_free", "double free"),
    # decrement first, complain after: the refused free() leaves a count of -1
    ("        if self.refs[block] == 0:\n            raise ValueError(f\"block {block} is already free\")\n"
     "        self.refs[block] -= 1\n",
     "        self.refs[block] -= 1\n        if self.refs[block] < 0:\n"
     "            raise ValueError(f\"block {block} is already free\")\n",
     "allocator_refuses_double_free", "Check before you decrement"),
    # share() of a free block accepted
    ("        if self.refs[block] == 0:\n            raise ValueError(f\"block {block} is free: allocate it first\")\n",
     "", "allocator_refuses_to_share_a_free_block", "share()"),
    # share() sets the count instead of adding one
    ("        self.refs[block] += 1", "        self.refs[block] = 2", "allocator_counts_references", "3 times"),
    # each block hashed on its own: no chain
    ("prev = hash((prev, tuple(token_ids[i * block_size:(i + 1) * block_size])))",
     "prev = hash((None, tuple(token_ids[i * block_size:(i + 1) * block_size])))", "hash_chain_matches_reference",
     "Chain them"),
    # the partial last block hashed too
    ("for i in range(len(token_ids) // block_size):", "for i in range(-(-len(token_ids) // block_size)):",
     "hash_chain_matches_reference", "partial last block"),
    # slot = block id + offset (block id not scaled by the block size)
    ("return [block_table[p // block_size] * block_size + p % block_size",
     "return [block_table[p // block_size] + p % block_size", "slot_mapping_follows_the_block_table", "multiply"),
    # the notebook's block size hard-coded
    ("return [block_table[p // block_size] * block_size + p % block_size",
     "return [block_table[p // 16] * 16 + p % 16", "slot_mapping_follows_the_block_table", None),
    # count taken as the end position
    ("for p in range(start, start + count)]", "for p in range(start, count)]", "slot_mapping_follows_the_block_table",
     "start in the middle"),
])
def test_typical_mistakes_lose_points(tmp_path, old, new, check, hint, g):
    g.assert_loses(g.variant(EXERCISE, tmp_path, old, new), check, hint)
