"""Block manager and scheduler on their own: no model involved."""
import pytest

from labkit.engine.block_manager import BlockManager, block_hash
from labkit.engine.scheduler import Scheduler
from labkit.engine.sequence import Sequence, Status
from labkit.models.sampling import SamplingParams


def seq(n: int, start: int = 0, max_tokens: int = 8) -> Sequence:
    return Sequence(list(range(start, start + n)), SamplingParams(temperature=0, max_tokens=max_tokens))


def test_allocate_and_release_count_blocks():
    bm = BlockManager(8, 4)
    s = seq(9)                                     # 3 blocks: 4 + 4 + 1
    assert bm.can_allocate(s) and bm.allocate(s) == 0
    assert len(s.block_table) == 3 and bm.num_free == 5
    bm.release(s)
    assert bm.num_free == 8 and s.block_table == []


def test_hash_chain_names_the_whole_prefix():
    a, b = block_hash(None, [1, 2, 3, 4]), block_hash(None, [9, 9, 9, 9])
    assert block_hash(a, [5, 6, 7, 8]) != block_hash(b, [5, 6, 7, 8])
    assert block_hash(a, [5, 6, 7, 8]) == block_hash(block_hash(None, (1, 2, 3, 4)), (5, 6, 7, 8))


def test_prefix_hits_only_after_publish_and_share_blocks():
    bm = BlockManager(16, 4)
    first = seq(10)
    bm.allocate(first)
    assert bm.match_prefix(list(range(12))) == []   # nothing computed yet: nothing published
    first.num_computed = 10
    bm.publish(first)                               # two full blocks
    second = seq(12)
    assert bm.allocate(second) == 8
    assert second.block_table[:2] == first.block_table[:2]
    assert [bm.blocks[b].ref_count for b in first.block_table[:2]] == [2, 2]
    assert second.num_computed == 8


def test_the_last_token_is_never_a_hit():
    bm = BlockManager(16, 4)
    s = seq(8)
    bm.allocate(s)
    s.num_computed = 8
    bm.publish(s)
    again = seq(8)                                  # same 8 tokens: only the first block may hit
    assert bm.allocate(again) == 4


def test_released_blocks_stay_cached_until_reused_lru():
    bm = BlockManager(4, 2)
    a = seq(4, start=0)
    bm.allocate(a)
    a.num_computed = 4
    bm.publish(a)
    bm.release(a)
    assert bm.num_free == 4 and bm.num_cached_free == 2
    assert bm.can_allocate(seq(5, start=0))       # 2 hits (idle) + 1 fresh out of 4 free
    b = seq(6, start=100)                           # 3 fresh blocks: the two never-used ones, then an LRU one
    bm.allocate(b)
    assert bm.num_cached_free == 1
    hits = bm.match_prefix(list(range(5)))
    assert len(hits) == 1                           # a's tail block went first; its head block survived


def test_can_allocate_counts_idle_hits_as_taken():
    bm = BlockManager(3, 2)
    a = seq(4)
    bm.allocate(a)
    a.num_computed = 4
    bm.publish(a)
    bm.release(a)
    # 5 tokens: 3 blocks; 2 hit, but they sit in the free list, so 1 fresh block must come from the
    # one remaining free block: fits. 7 tokens would need 2 fresh: does not fit.
    assert bm.can_allocate(seq(5))
    assert not bm.can_allocate(seq(7))


def test_scheduler_decodes_first_and_chunks_prefills():
    bm = BlockManager(64, 4)
    sch = Scheduler(bm, max_batch_size=8, max_num_batched_tokens=10)
    long, short = seq(25), seq(3, start=50)
    sch.add(long)
    sch.add(short)
    b = sch.schedule()
    assert b.seqs == [long] and b.num_tokens == [10]        # the budget is spent on the first chunk
    sch.postprocess(b)
    b = sch.schedule()
    assert b.seqs == [long] and b.num_tokens == [10]
    sch.postprocess(b)
    b = sch.schedule()                                       # the rest of the prompt, then the next request
    assert b.seqs == [long, short] and b.num_tokens == [5, 3]
    sch.postprocess(b)
    long.token_ids.append(7)
    short.token_ids.append(7)
    b = sch.schedule()                                       # both decode: one token each
    assert b.num_tokens == [1, 1]


def test_scheduler_preempts_the_newest_when_blocks_run_out():
    bm = BlockManager(4, 2)
    sch = Scheduler(bm, max_batch_size=4, max_num_batched_tokens=64)
    old, new = seq(4, start=0), seq(3, start=10)
    sch.add(old)
    sch.add(new)
    b = sch.schedule()
    assert b.seqs == [old, new] and bm.num_free == 0
    sch.postprocess(b)
    old.token_ids.append(1)                          # both sampled a token: both need a new block
    new.token_ids.append(1)
    b = sch.schedule()
    assert b.preempted == [new] and new.status is Status.WAITING and sch.waiting[0] is new
    assert b.seqs == [old] and new.num_computed == 0 and new.block_table == []


def test_static_scheduler_waits_for_the_whole_batch():
    bm = BlockManager(64, 4)
    sch = Scheduler(bm, max_batch_size=2, mode="static")
    a, b_, c = seq(4, max_tokens=2), seq(4, 10, max_tokens=6), seq(4, 20)
    for s in (a, b_, c):
        sch.add(s)
    batch = sch.schedule()
    assert batch.seqs == [a, b_] and len(a.block_table) == 2 and len(b_.block_table) == 3  # output reserved
    sch.postprocess(batch)
    sch.finish(a, "length")
    assert sch.schedule().seqs == [b_]                # c waits although a slot is free
    with pytest.raises(ValueError):
        Scheduler(bm, mode="dynamic")
