"""Greedy outputs of the engine equal the simple generator's, whatever the batch looks like."""
import pytest

from labkit.engine import LLM


def make(tiny, tok, **kw):
    return LLM(tiny, tokenizer=tok, **{"num_blocks": 128, "block_size": 4, **kw})


def check(llm, h, prompts, params):
    outs = llm.generate(prompts, params)
    refs = h.reference(llm.model, llm.tokenizer, prompts, params)
    for out, ref in zip(outs, refs):
        assert out.token_ids == ref.token_ids, (out.token_ids, ref.token_ids)
        assert out.text == ref.text and out.finish_reason == ref.finish_reason
    h.assert_no_leaks(llm)
    return outs


def test_alone(tiny, tokenizer, h):
    check(make(tiny, tokenizer), h, h.prompts_of(tokenizer, 1), h.greedy(16))


def test_batch_of_8_mixed_lengths(tiny, tokenizer, h):
    llm = make(tiny, tokenizer)
    check(llm, h, h.prompts_of(tokenizer, 8), [h.greedy(n) for n in (3, 16, 9, 1, 12, 16, 5, 7)])
    assert llm.stats()["steps"] <= 17                 # one batch: steps follow the longest output


def test_chunked_prefill(tiny, tokenizer, h):
    llm = make(tiny, tokenizer, max_num_batched_tokens=7)
    check(llm, h, h.prompts_of(tokenizer, 4, lengths=(40, 23, 64, 9)), h.greedy(10))
    steps = [sum(n for _, kind, n in rec.work if kind != "padding") for rec in llm.timeline]
    assert steps and max(steps) == 7, f"every step runs at most the 7-token budget, and some use all of it: {steps}"
    prefill_steps = {}
    for rec in llm.timeline:
        for rid, kind, _ in rec.work:
            if kind == "prefill":
                prefill_steps[rid] = prefill_steps.get(rid, 0) + 1
    assert max(prefill_steps.values()) >= 64 // 7, f"the 64-token prompt is prefilled in chunks: {prefill_steps}"


def test_same_length_prompts_prefill_in_one_attention_call_per_layer(tiny, tokenizer, h, monkeypatch):
    """Five fresh prompts of 12 tokens and one of 7 in one step: two attention calls per layer
    (one per length), not six; and the same tokens as the simple generator."""
    import labkit.engine.paged_attention as pa

    calls = []
    original = pa.attention
    monkeypatch.setattr(pa, "attention", lambda q, *a: calls.append(tuple(q.shape)) or original(q, *a))
    prompts = h.prompts_of(tokenizer, 6, lengths=(12, 12, 7, 12, 12, 12))
    llm = make(tiny, tokenizer)
    llm.generate(prompts, h.greedy(1))
    layers = tiny.config.num_hidden_layers
    assert sorted(calls) == sorted([(5, 4, 12, 16)] * layers + [(1, 4, 7, 16)] * layers), calls
    check(make(tiny, tokenizer), h, prompts, h.greedy(8))


def test_preemption_under_a_tiny_cache(tiny, tokenizer, h):
    # 20 blocks of 4 tokens: the 6 requests need up to 6 * (33 + 16) / 4 blocks together.
    llm = make(tiny, tokenizer, num_blocks=20, max_model_len=80, enable_prefix_caching=False)
    check(llm, h, h.prompts_of(tokenizer, 6, lengths=(33, 12, 25, 30, 8, 17)), h.greedy(16))
    assert any(o for o in _preemptions(llm)), "the cache was meant to be too small"


def _preemptions(llm):
    return [rec.preempted for rec in llm.timeline]


@pytest.fixture
def recording(monkeypatch):
    """Every LLM of the test keeps its scheduler timeline."""
    import labkit.engine.llm as mod

    original = mod.LLM.__init__
    monkeypatch.setattr(mod.LLM, "__init__", lambda self, *a, **k: original(self, *a, **{"record_timeline": True, **k}))


test_preemption_under_a_tiny_cache = pytest.mark.usefixtures("recording")(test_preemption_under_a_tiny_cache)
test_chunked_prefill = pytest.mark.usefixtures("recording")(test_chunked_prefill)


def test_prefix_cache_hits(tiny, tokenizer, h):
    llm = make(tiny, tokenizer)
    shared = h.prompts_of(tokenizer, 1, lengths=(37,))[0]
    first = check(llm, h, [shared + [100, 200]], h.greedy(6))
    assert first[0].cached_tokens == 0
    again = check(llm, h, [shared + [300], shared + [400, 500, 600]], h.greedy(6))
    assert [o.cached_tokens for o in again] == [36, 36]   # 9 full blocks of 4 of the shared 37 tokens
    assert llm.stats()["prefix_cache_hit_tokens"] == 72


def test_static_scheduler(tiny, tokenizer, h):
    llm = make(tiny, tokenizer, scheduler="static", max_batch_size=3)
    check(llm, h, h.prompts_of(tokenizer, 5), [h.greedy(n) for n in (4, 9, 2, 6, 3)])


@pytest.mark.parametrize("policy", [8, 4])
def test_quantized_kv_stays_close(tiny, tokenizer, h, policy):
    """The prefill attends to exact K/V; the decode steps read the quantized cache."""
    import torch

    llm = make(tiny, tokenizer, quant_policy=policy)
    prompt = h.prompts_of(tokenizer, 1, lengths=(30,))[0]
    out = llm.generate([prompt], h.greedy(2))[0]
    assert out.token_ids[0] == h.reference(tiny, tokenizer, [prompt], h.greedy(1))[0].token_ids[0]
    from labkit.engine.sequence import Sequence

    s = Sequence(prompt, h.greedy(2))
    llm.engine.add(s)
    llm.engine.step()                                   # prefill (prefix-cache hits), one sampled token
    logits, _ = llm.engine.runner.run(llm.engine.scheduler.schedule())   # one decode over quantized K/V
    with torch.no_grad():
        exact = tiny(torch.tensor([s.token_ids]))[0, -1]
    err = ((logits[0] - exact).norm() / exact.norm()).item()
    assert err < (0.05 if policy == 8 else 0.3), err


def test_embedded_model_batch(embedded, h):
    model, tok = embedded
    llm = LLM(model, tokenizer=tok, num_blocks=64)
    prompts = [tok.encode_chat([{"role": "user", "content": q}]) for q in
               ("What is the capital of France?", "Name three colors.", "Count to five.")]
    check(llm, h, prompts, h.greedy(8))


@pytest.mark.slow
def test_compiled_decode_on_cpu(tiny, tokenizer, h):
    """`compile=True` on a CPU runs decode-only steps through torch.compile (sizes dynamic):
    batches of mixed lengths, contexts growing across block boundaries, the same tokens."""
    llm = make(tiny, tokenizer, compile=True)
    assert llm.engine.runner.decode_forward is not llm.engine.runner.forward
    check(llm, h, h.prompts_of(tokenizer, 1, seed=2), h.greedy(9))   # batch 1: no mask
    check(llm, h, h.prompts_of(tokenizer, 3), [h.greedy(n) for n in (12, 16, 7)])   # then recompiled with one
