"""Paged decode attention and the quantized KV cache on small caches whose sequences have
ragged lengths and blocks scattered over the pool (tables padded with -1, spare blocks
owned by nobody); outputs start as NaN; float64 torch on the same cache is the reference."""
import pytest
import torch

from labkit.kernels import kv_quant, launch, paged_attention


@pytest.mark.parametrize("kwargs", [
    dict(lengths=(1, 21, 40), heads=4, kv_heads=2, head_dim=32),                 # GQA, one partition
    dict(lengths=(1, 21, 40), heads=4, kv_heads=2, head_dim=32, partition=32),   # split-K, merged in-kernel
    dict(lengths=(5, 70), heads=3, kv_heads=3, head_dim=64, partition=32),       # MHA, head_dim 64
    dict(lengths=(33,), heads=8, kv_heads=1, head_dim=128, block_size=32),       # 8 heads share 1: 2 blocks of 4
    dict(lengths=(3, 50, 130), heads=2, kv_heads=2, head_dim=32, max_context=1024),  # planned for 1024: 16 partitions, 1-3 used
])
def test_paged_attention(kwargs, seed):
    err = paged_attention.check(**kwargs, seed=seed)
    assert err <= paged_attention.attention_tolerance(kwargs["head_dim"], max(kwargs["lengths"]))


def test_split_k_counters_reset_between_launches(seed):
    """The last block of a split sequence merges and resets its ticket counter: a second
    launch on the same workspace must merge again (a stale count leaves NaN outputs)."""
    for i in range(2):
        err = paged_attention.check((40, 70), heads=2, kv_heads=2, head_dim=32, partition=16, seed=seed + i)
        assert err <= paged_attention.attention_tolerance(32, 70)


def test_gather_kv_follows_the_block_table():
    k, _, tables, lens = paged_attention.random_paged(2, [3, 20], 1, 8, 16)
    seq = paged_attention.gather_kv(k, tables[1], 20)
    assert torch.equal(seq[17], k[tables[1, 1], :, 1])


@pytest.mark.parametrize("bits", [16, 8, 4])
def test_write_kv_stores_what_torch_stores(bits, seed):
    kv_quant.check_write(bits, seed=seed)


@pytest.mark.parametrize("bits, partition", [(8, None), (4, 16)])
def test_attention_over_quantized_cache(bits, partition, seed):
    err = kv_quant.check(bits, lengths=(3, 37), head_dim=32, partition=partition, seed=seed)
    assert err <= paged_attention.attention_tolerance(32, 37)


@pytest.mark.parametrize("bits, kwargs", [
    (16, dict(lengths=(1, 17, 40), partition=16)),   # only the new token; it opens a partition; split-K
    (8, dict(lengths=(1, 17, 40), partition=16)),
    (4, dict(lengths=(1, 17, 40), partition=16)),
    (16, dict(lengths=(2, 33), heads=8, kv_heads=1, head_dim=16, partition=None)),   # 2 blocks per KV head: one writes
])
def test_attention_rotates_and_writes_the_new_tokens(bits, kwargs, seed):
    """The decode step's attention with q and the new K/V not rotated and not cached (NewTokens):
    the output and the new rows against torch's rotate + write + attend (kv_quant.check_new_tokens)."""
    kv_quant.check_new_tokens(bits, **kwargs, seed=seed)


def test_attention_with_new_tokens_refuses_bad_shapes():
    dev = launch.device()
    k, v, tables, lens = paged_attention.random_paged(1, [5], 2, 32, 16)
    q = torch.zeros(1, 4, 32, dtype=torch.float16, device=dev)
    rows = torch.zeros(1, 2, 32, dtype=torch.float16, device=dev)
    angles = torch.zeros(1, 32, dtype=torch.float16, device=dev)
    slots = torch.zeros(1, dtype=torch.int64, device=dev)
    args = (q, k.to(dev), v.to(dev), tables.to(dev), lens.to(dev))
    for bad, match in ((paged_attention.NewTokens(rows[:, :1], rows, angles, angles, slots), "k must be"),
                       (paged_attention.NewTokens(rows, rows, angles[:, :16], angles, slots), "cos must be"),
                       (paged_attention.NewTokens(rows, rows, angles, angles, slots.int()), "slots must be int64")):
        with pytest.raises(ValueError, match=match):
            paged_attention.paged_attention(*args, new=bad)


def test_quantized_round_trip_is_within_half_a_step(seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 2, 32, generator=gen).half()
    for bits in (8, 4):
        codes, sz = kv_quant.quantize_reference(x, bits)
        err = (kv_quant.dequantize_cache(codes, sz, bits) - x.float()).abs()
        scale, zero = sz[..., :1].float(), sz[..., 1:].float()
        # half a step, plus the fp16 rounding of the zero point (it matters where codes clamp)
        assert bool((err <= scale * (0.5 + 2**-11 * zero.abs() + 1e-4)).all())


def test_fp16_attention_refuses_uint8_cache():
    q = torch.zeros(1, 2, 32, dtype=torch.float16, device=launch.device())
    cache = torch.zeros(2, 2, 16, 32, dtype=torch.uint8, device=launch.device())
    tables = torch.zeros(1, 1, dtype=torch.int32, device=launch.device())
    with pytest.raises(ValueError, match="fp16 caches"):
        paged_attention.paged_attention(q, cache, cache, tables, tables[0])
