"""The numba backend's attention (kernels for K/V writes and decode) against the torch backend,
on one mixed step: two decodes over scattered blocks and a prefill chunk with cached context.
Runs the real kernels on a GPU, or in the CUDA simulator in CI."""
import pytest
import torch

pytest.importorskip("labkit.kernels.kv_quant")

from labkit.engine.kv_cache import PagedKVCache  # noqa: E402
from labkit.engine.paged_attention import (NumbaAttention, PagedAttention, StepInputs,  # noqa: E402
                                           set_rotary_in_attention)
from labkit.models import LlamaConfig  # noqa: E402


def two_caches(policy: int, cached: list[int]) -> tuple[torch.device, list[PagedKVCache]]:
    """Two equal paged caches (one layer, 2 KV heads of 16, blocks of 4) holding random K/V at the
    `cached` slots: one for the torch backend, one for the numba backend."""
    from labkit.kernels.launch import device

    torch.manual_seed(0)
    dev = device()
    cfg = LlamaConfig(vocab_size=10, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    caches = [PagedKVCache(cfg, 16, 4, torch.float16, dev, policy) for _ in range(2)]
    slots = torch.tensor(cached, device=dev)
    ctx_k, ctx_v = (torch.randn(len(cached), 2, 16, device=dev).half() for _ in range(2))
    for kv in caches:
        kv.write(0, kv.rows(slots), ctx_k, ctx_v)
    return dev, caches


@pytest.mark.parametrize("policy", [0, 8, 4])
def test_numba_attention_matches_torch(policy):
    # cached context: sequence A holds slots 12-15 and 28 (blocks 3, 7), B slots 4-5 (block 1),
    # C (the prefill chunk) slots 40-43 (block 10) and goes on in block 11
    dev, caches = two_caches(policy, [12, 13, 14, 15, 28, 4, 5, 40, 41, 42, 43])
    inputs = StepInputs(
        input_ids=torch.zeros(5, dtype=torch.long, device=dev), positions=torch.tensor([5, 2, 4, 5, 6], device=dev),
        slot_mapping=torch.tensor([29, 6, 44, 45, 46], device=dev),
        block_tables=torch.tensor([[3, 7], [1, -1]], dtype=torch.int32, device=dev),
        context_lens=torch.tensor([6, 3], dtype=torch.int32, device=dev), logits_indices=torch.arange(3, device=dev),
        max_context=6, needs_mask=True, prefills=[(2, 3, 7, torch.tensor([10, 11], device=dev))])
    q = torch.randn(1, 5, 4, 16, device=dev).half()
    k, v = (torch.randn(1, 5, 2, 16, device=dev).half() for _ in range(2))
    want = PagedAttention(caches[0], inputs).attend(0, q, k, v).float()
    got = NumbaAttention(caches[1], inputs).attend(0, q, k, v).float()
    assert torch.equal(caches[0].k, caches[1].k) and torch.equal(caches[0].v, caches[1].v)
    tol = 2e-3 if policy == 0 else 2e-2
    assert (got - want).abs().max().item() < tol * max(1.0, want.abs().max().item())


@pytest.mark.parametrize("policy", [0, 4])
def test_decode_step_rotates_and_writes_inside_attention(policy):
    """A step of decodes only: the numba backend takes q and k before the rotary embedding and
    one kernel rotates them, writes the new K/V and attends. Against the torch backend given q
    and k rotated in float32 and rounded once, as the kernel rounds: the same output, and the same
    caches up to the rotated K's last fp16 bit (one code step in a quantized cache)."""
    from labkit.kernels.kv_quant import unpack_codes
    from labkit.models.llama import apply_rope

    dev, caches = two_caches(policy, [12, 13, 14, 15, 28, 4, 5])   # A: blocks 3, 7; B: block 1
    positions = torch.tensor([5, 2], device=dev)
    inputs = StepInputs(
        input_ids=torch.zeros(2, dtype=torch.long, device=dev), positions=positions,
        slot_mapping=torch.tensor([29, 6], device=dev),
        block_tables=torch.tensor([[3, 7], [1, -1]], dtype=torch.int32, device=dev),
        context_lens=torch.tensor([6, 3], dtype=torch.int32, device=dev), logits_indices=torch.arange(2, device=dev),
        max_context=6, needs_mask=True)
    q = torch.randn(1, 2, 4, 16, device=dev).half()
    k, v = (torch.randn(1, 2, 2, 16, device=dev).half() * 3 for _ in range(2))
    angles = positions[:, None].float() * 10000.0 ** -(torch.arange(0, 16, 2, device=dev) / 16)
    cos, sin = (torch.cat([f(angles)] * 2, -1)[None, :, None].half() for f in (torch.cos, torch.sin))
    numba, torch_side = NumbaAttention(caches[1], inputs), PagedAttention(caches[0], inputs)
    assert numba.rotary_inside and not getattr(torch_side, "rotary_inside", False)
    previous = set_rotary_in_attention(False)   # (LABKIT_ROTARY_IN_ATTENTION=0): the model rotates
    try:
        assert not numba.rotary_inside
    finally:
        set_rotary_in_attention(previous)
    got = numba.attend_unrotated(0, q, k, v, cos, sin).float()
    rotated = [apply_rope(x.float(), cos.float(), sin.float()).half() for x in (q, k)]
    want = torch_side.attend(0, rotated[0], rotated[1], v).float()
    assert (got - want).abs().max().item() < (2e-3 if policy == 0 else 2e-2) * max(1.0, want.abs().max().item())
    torch_kv, numba_kv = caches
    if policy == 0:
        assert torch.equal(torch_kv.v, numba_kv.v)
        assert torch.allclose(torch_kv.k.float(), numba_kv.k.float(), rtol=2**-10, atol=0)
        return
    for name in ("k", "v"):   # codes within a step (the division rounds at a tie either way on a GPU)
        a, b = (unpack_codes(getattr(kv, name), policy).int() for kv in caches)
        assert (a - b).abs().max().item() <= 1
        assert (a != b).sum().item() <= 32   # only the new tokens' rows: 2 tokens x 16 elements
    for name in ("k_scale_zero", "v_scale_zero"):
        assert torch.allclose(getattr(torch_kv, name).float(), getattr(numba_kv, name).float(), rtol=2**-9, atol=0)
