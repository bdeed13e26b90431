"""The tensor-parallel calculator: bytes on the wire counted by hand, memory per GPU from the
shard's shapes, the fit to gpt-fast's A100 scaling, and the dashboard's controls."""
from __future__ import annotations

import pytest

from labkit.profile import cost
from labkit.profile.configs import PRESETS
from labkit.profile.hardware import GPUS
from labkit.profile.parallel import (INTERCONNECTS, ParallelCalculator, comm_bytes_per_token, plan_table, tp_plan,
                                     tp_sweep)

L7, L70 = PRESETS["Llama-2-7B"], PRESETS["Llama-2-70B"]
NVLINK3, PCIE4 = INTERCONNECTS["NVLink 3 (A100 SXM)"], INTERCONNECTS["PCIe 4.0 x16"]


def test_bytes_per_token_by_hand():
    # tp=2, fp16: 65 all-reduces of 4096 x 2 bytes, each sending 2 (N-1)/N = 1x its size;
    # the all-gather sends half of the 32000 x 2 bytes of logits
    assert comm_bytes_per_token(L7, 2) == {"all_reduce": 65 * 8192, "all_gather": 32000, "total": 65 * 8192 + 32000}
    assert comm_bytes_per_token(L7, 4)["all_reduce"] == 65 * 8192 * 1.5
    assert comm_bytes_per_token(L7, 1)["total"] == 0


def test_memory_per_gpu_is_the_shards():
    one, two = (tp_plan(L70, GPUS["H200"], NVLINK3, n, batch=8, context=4096) for n in (1, 2))
    embed_and_head = 2 * L70.vocab_size * L70.hidden_size * 2
    norms = (2 * L70.num_hidden_layers + 1) * L70.hidden_size * 2
    assert two.memory.weights == pytest.approx((one.memory.weights - norms) / 2 + norms, rel=1e-9)
    assert one.memory.weights > embed_and_head
    assert two.memory.kv_cache == one.memory.kv_cache / 2
    # 8 KV heads over 16 GPUs: each holds one (copied), no less
    sixteen = tp_plan(L70, GPUS["H200"], NVLINK3, 16, batch=8, context=4096)
    assert sixteen.memory.kv_cache == one.memory.kv_cache / 8
    assert not one.memory.fits and two.memory.fits   # 70B fp16 needs two H200s


def test_fit_to_gpt_fast_a100_scaling():
    measured = {1: 104.9, 2: 168.8, 4: 254.0}   # gpt-fast, Llama-2-7B bf16, batch 1, A100s
    plans = {p.tp: p for p in tp_sweep(L7, GPUS["A100 80GB"], NVLINK3, sizes=(1, 2, 4))}
    for n, tok_s in measured.items():
        assert plans[n].tokens_per_s == pytest.approx(tok_s, rel=0.15)


def test_scaling_gets_worse_with_more_gpus_and_a_slower_link():
    nv = tp_sweep(L7, GPUS["H100 SXM"], NVLINK3)
    pcie = tp_sweep(L7, GPUS["H100 SXM"], PCIE4)
    assert [p.efficiency for p in nv] == sorted((p.efficiency for p in nv), reverse=True)
    assert all(a.comm_share < b.comm_share for a, b in zip(nv[1:], pcie[1:]))
    assert nv[0].comm_s == 0 and nv[0].efficiency == 1


def test_sizes_the_heads_cannot_take_are_marked():
    plans = tp_sweep(PRESETS["embedded (SmolLM2-135M)"], GPUS["T4"], PCIE4)
    assert [p.possible for p in plans] == [True, False, False, False]   # 9 heads
    assert "heads do not split" in plan_table(plans)


def test_calculator_follows_its_controls():
    calc = ParallelCalculator()
    fast = calc.plans[1].tokens_per_s
    calc.link.value = "PCIe 4.0 x16"
    assert calc.plans[1].tokens_per_s < fast
    calc.model_choice.value = "Llama-2-70B"
    assert calc.plans[0].memory.total > 100 * cost.GB and "<table>" in calc.summary.value
