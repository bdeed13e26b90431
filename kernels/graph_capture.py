"""Kernel launches inside a torch CUDA graph: the engine captures its decode step, so every
kernel it calls must launch on the capturing stream and read its inputs from fixed buffers.
`graph_capture_check` proves it for one launch sequence (`labkit bench kernels`, notebook 07
and tests/kernels/test_graph_capture.py run it on a GPU).
"""
from __future__ import annotations

import torch


def graph_capture_check() -> dict:
    """Capture gemv -> gemm -> write_kv -> attention in one CUDA graph, refill the static
    inputs with new values, replay, and compare with the same kernels run eagerly."""
    from labkit.kernels import kv_quant, w4a16_gemm, w4a16_gemv
    from labkit.kernels.packing import random_int4_layer
    from labkit.kernels.paged_attention import bench_cache, paged_attention

    layer = random_int4_layer(512, 1024, 128, "cuda")
    x1 = torch.randn(1, 1024, device="cuda").half()
    x4 = torch.randn(4, 1024, device="cuda").half()
    k, v, tables, lens = bench_cache(4, 300, 8, 128)
    q = torch.randn(4, 32, 128, device="cuda").half()
    new_k, new_v = torch.randn(2, 4, 8, 128, device="cuda").half()
    slots = torch.tensor([5, 700, 1100, 1200], device="cuda")

    def step() -> tuple[torch.Tensor, ...]:
        y1 = w4a16_gemv.w4a16_gemv(x1, *layer, 128)
        y4 = w4a16_gemm.w4a16_gemm(x4, *layer, 128)
        kv_quant.write_kv(new_k, new_v, slots, k, v)
        return y1, y4, paged_attention(q, k, v, tables, lens, max_context_len=300)

    step()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = step()
    for t in (x1, x4, q, new_k, new_v):
        t.copy_(torch.randn_like(t))
    graph.replay()
    torch.cuda.synchronize()
    replayed = [t.clone() for t in static_out]
    eager = step()
    same = all(torch.equal(a, b) for a, b in zip(replayed, eager))
    return {"graph_replay_matches_eager": same, "kernels": ["w4a16_gemv", "w4a16_gemm", "write_kv", "paged_attention"]}
