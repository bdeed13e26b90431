"""The numba backend's attention (kernels for K/V writes and decode) against the torch backend,
on one mixed step: two decodes over scattered blocks and a prefill chunk with cached context.
Runs the real kernels on a GPU, or in the CUDA simulator in CI."""
import pytest
import torch

pytest.importorskip("labkit.kernels.kv_quant")

from labkit.engine.kv_cache import PagedKVCache  # noqa: E402
from labkit.engine.paged_attention import NumbaAttention, PagedAttention, StepInputs  # noqa: E402
from labkit.models import LlamaConfig  # noqa: E402


@pytest.mark.parametrize("policy", [0, 8, 4])
def test_numba_attention_matches_torch(policy):
    from labkit.kernels.launch import device

    torch.manual_seed(0)
    dev = device()
    cfg = LlamaConfig(vocab_size=10, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    caches = [PagedKVCache(cfg, 16, 4, torch.float16, dev, policy) for _ in range(2)]
    # cached context: sequence A holds slots 12-15 and 28 (blocks 3, 7), B slots 4-5 (block 1),
    # C (the prefill chunk) slots 40-43 (block 10) and goes on in block 11
    cached = torch.tensor([12, 13, 14, 15, 28, 4, 5, 40, 41, 42, 43], device=dev)
    ctx_k, ctx_v = (torch.randn(len(cached), 2, 16, device=dev).half() for _ in range(2))
    for kv in caches:
        kv.write(0, kv.rows(cached), ctx_k, ctx_v)
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
