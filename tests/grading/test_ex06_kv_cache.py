"""Exercises 06 and 08 (KV cache, batching): solutions score full marks, stubs zero, typical mistakes lose points."""
import pytest


@pytest.mark.parametrize("exercise", ["ex06_kv_cache", "ex08_batching"])
def test_solution_full_marks_and_stub_zero(exercise, g):
    report = g.solution(exercise)
    assert report.score == report.max > 0, g.failed(report)
    stub = g.stub(exercise)
    assert stub.score == 0 and all(r.message == "not implemented yet" for r in stub.results)


@pytest.mark.parametrize("exercise, old, new, check, hint", [
    # free() ignores the reference count: a shared block goes back while another request reads it
    ("ex06_kv_cache", "        self.refs[block] -= 1\n        if self.refs[block] == 0:\n            self.free_list.append(block)",
     "        self.refs[block] = 0\n        self.free_list.append(block)", "allocator_counts_references", "still reads"),
    # no error on exhaustion: pop from an empty list raises IndexError, not RuntimeError
    ("ex06_kv_cache", "        if not self.free_list:\n            raise RuntimeError(\"out of KV cache blocks\")\n", "",
     "allocator_hands_out_distinct_blocks", "RuntimeError"),
    # double free silently accepted
    ("ex06_kv_cache", "        if self.refs[block] == 0:\n            raise ValueError(f\"block {block} is already free\")\n", "",
     "allocator_refuses_double_free", "double free"),
    # each block hashed on its own: no chain
    ("ex06_kv_cache", "prev = hash((prev, tuple(token_ids[i * block_size:(i + 1) * block_size])))",
     "prev = hash((None, tuple(token_ids[i * block_size:(i + 1) * block_size])))", "hash_chain_matches_reference",
     "Chain them"),
    # the partial last block hashed too
    ("ex06_kv_cache", "for i in range(len(token_ids) // block_size):", "for i in range(-(-len(token_ids) // block_size)):",
     "hash_chain_matches_reference", "partial last block"),
    # slot = block id + offset (block id not scaled by the block size)
    ("ex06_kv_cache", "return [block_table[p // block_size] * block_size + p % block_size",
     "return [block_table[p // block_size] + p % block_size", "slot_mapping_follows_the_block_table", "multiply"),
    # prefills before decodes: a long prompt starves the requests that are answering
    ("ex08_batching", "        if not req.in_prefill and budget > 0:", "        if False:", "decodes_come_first", "before A"),
    # a whole prompt at once, ignoring the budget
    ("ex08_batching", "            n = min(req.prompt_len - req.computed, budget)", "            n = req.prompt_len - req.computed",
     "chunked_prefill_spends_the_budget", "chunks"),
    # skipping a request that does not fit and admitting a later one
    ("ex08_batching", "        if need > free_blocks:\n            break\n        waiting.pop(0)",
     "        if need > free_blocks:\n            return plan, free_blocks\n        waiting.pop(0)",
     None, None),
    # first fit instead of first come: a small request overtakes a big one that does not fit
    ("ex08_batching", "    while waiting and len(running) < max_batch and budget > 0:   # 3. admissions\n"
     "        req = waiting[0]\n        need = -(-req.prompt_len // block_size)\n        if need > free_blocks:\n"
     "            break\n        waiting.pop(0)",
     "    for req in list(waiting):   # 3. admissions\n        if not (len(running) < max_batch and budget > 0):\n"
     "            break\n        need = -(-req.prompt_len // block_size)\n        if need > free_blocks:\n"
     "            continue\n        waiting.remove(req)",
     "admission_is_first_come_first_served", "overtake"),
    # blocks not taken on admission
    ("ex08_batching", "req.blocks, free_blocks = need, free_blocks - need", "req.blocks = need",
     "chunked_prefill_spends_the_budget", "3 blocks"),
    # the batch-size limit ignored
    ("ex08_batching", "while waiting and len(running) < max_batch and budget > 0:", "while waiting and budget > 0:",
     "admission_respects_batch_size_and_budget", "batch is full"),
])
def test_typical_mistakes_lose_points(tmp_path, exercise, old, new, check, hint, g):
    report = g.solution(exercise)
    variant = g.variant(exercise, tmp_path, old, new)
    if check is None:   # an equivalent rewrite: must keep full marks (the checks are not brittle)
        assert variant.score == report.max, g.failed(variant)
        return
    failed = g.failed(variant)
    assert check in failed and variant.score < report.max, (check, failed)
    if hint:
        assert hint in failed[check], failed[check]
