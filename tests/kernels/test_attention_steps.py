"""The course's ramp into decode attention (kernels/attention_steps.py): every step computes
the same attention as float64 torch, on paged caches with ragged lengths, scattered blocks
and NaN-poisoned outputs (simulator without a GPU; small shapes)."""
import pytest
import torch

from labkit.kernels import attention_steps, launch, paged_attention


@pytest.mark.parametrize("step", [*attention_steps.STEPS[:-1],
                                  pytest.param("fast", marks=pytest.mark.slow)])  # the kernel: ~10 s simulated
def test_every_step_matches_the_reference(step, seed):
    # GQA (2 query heads per KV head), a 1-token sequence, contexts over several blocks and
    # partitions (the longest fills 3 of 16-token partitions; the others leave some empty)
    err = attention_steps.check(step, lengths=(1, 21, 40), heads=4, kv_heads=2, head_dim=32, partition=16, seed=seed)
    assert err <= paged_attention.attention_tolerance(32, 40)


@pytest.mark.parametrize("step, kwargs", [
    ("contiguous", dict(lengths=(5, 33), heads=2, kv_heads=2, head_dim=64)),                   # MHA, D = 64
    ("online", dict(lengths=(17,), heads=3, kv_heads=1, head_dim=16, block_size=8)),           # 3 heads share 1
    ("split_k", dict(lengths=(32, 7), heads=2, kv_heads=2, head_dim=32, partition=32)),        # an exact fit
    ("grouped", dict(lengths=(9, 50), heads=8, kv_heads=1, head_dim=16, partition=16)),        # a group of 8
])
def test_steps_on_other_shapes(step, kwargs, seed):
    err = attention_steps.check(step, **kwargs, seed=seed)
    assert err <= paged_attention.attention_tolerance(kwargs["head_dim"], max(kwargs["lengths"]))


def test_contiguous_cache_lays_sequences_out_in_order():
    k, _, tables, lens = paged_attention.random_paged(2, [3, 20], 2, 8, 16)
    flat = attention_steps.contiguous_cache(k, tables, lens)
    assert flat.shape == (2, 2, 20, 8)
    assert torch.equal(flat[1, :, 17], k[tables[1, 1], :, 1]) and torch.equal(flat[0, :, 2], k[tables[0, 0], :, 2])
    assert not flat[0, :, 3:].any()   # past a sequence's end: zeros, never read


def test_steps_refuse_what_they_cannot_hold():
    q = torch.zeros(1, 16, 32, dtype=torch.float16, device=launch.device())
    cache = torch.zeros(2, 1, 16, 32, dtype=torch.float16, device=launch.device())
    tables = torch.zeros(1, 1, dtype=torch.int32, device=launch.device())
    lens = torch.ones(1, dtype=torch.int32, device=launch.device())
    with pytest.raises(ValueError, match="at most 8 heads"):
        attention_steps.run("grouped", q, cache, cache, tables, lens)
    with pytest.raises(ValueError, match="unknown step"):
        attention_steps.run("flash", q[:, :2], cache, cache, tables, lens)
