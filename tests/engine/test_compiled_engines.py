"""Compiled engines on a CPU: two in one process (a full-precision one, then an int4 one) each
run their own model's compiled code, and `warmup` compiles every kind of step up front."""
import copy

import pytest
import torch

from labkit.engine import LLM


def greedy_tokens(llm, prompts, h):
    return [o.token_ids for o in llm.generate(prompts, h.greedy(6, ignore_eos=True))]


@pytest.mark.slow   # two models compile, two kinds of step each (about a minute each on two idle cores)
@pytest.mark.timeout(1800)
def test_two_compiled_engines_each_give_their_eager_tokens(tiny, tokenizer, h):
    from torch._dynamo.utils import counters

    prompts = h.prompts_of(tokenizer, 3, lengths=(5, 9, 14))
    small = dict(tokenizer=tokenizer, num_blocks=64, block_size=4, max_model_len=128)
    int4_model = copy.deepcopy(tiny).float()
    with torch.no_grad():   # a second model of the same shapes but other weights: other answers
        for p in int4_model.parameters():
            if p.dim() == 2:
                p.copy_(p.flip(1))
    int4_eager = LLM(copy.deepcopy(int4_model), weights="int4", **small)

    full = LLM(copy.deepcopy(tiny), compile=True, **small)
    lines = []
    full.warmup(lines.append)
    assert len(lines) == 4 and "batch 1 " in lines[0] and "batch 2+" in lines[2]   # a line before and after each
    graphs = counters["stats"]["unique_graphs"]
    got = greedy_tokens(full, prompts, h) + greedy_tokens(full, prompts[:1], h)
    assert counters["stats"]["unique_graphs"] == graphs   # warmed up: batch 3 and 1 compile nothing new
    assert got == [r.token_ids for r in h.reference(tiny, tokenizer, prompts + prompts[:1], h.greedy(6, ignore_eos=True))]

    # the second model compiles its own code: it must not run the first one's (that read
    # `weight` tensors an int4 layer does not have: KeyError, or another model's answer)
    int4 = LLM(int4_model, weights="int4", compile=True, **small)
    int4.warmup()
    answers = greedy_tokens(int4, prompts, h) + greedy_tokens(int4, prompts[:1], h)
    # bfloat16 activations: compiled and eager round differently, and a random model with a
    # 49k vocabulary has near-ties, so each token must be the eager int4 model's argmax up to
    # a few bfloat16 roundings of the logits (the first model's tokens are far from that)
    for prompt, tokens in zip(prompts + prompts[:1], answers):
        assert near_argmax(int4_eager.model, prompt, tokens)
    assert greedy_tokens(full, prompts[:1], h) == got[-1:]   # and the first still runs its own
    for llm in (full, int4, int4_eager):
        llm.close()


def near_argmax(model, prompt: list[int], tokens: list[int]) -> bool:
    with torch.inference_mode():
        logits = model(torch.tensor([prompt + tokens]))[0, len(prompt) - 1:-1].float()
    chosen = logits.gather(1, torch.tensor(tokens)[:, None])[:, 0]
    tol = 8 * 2.0 ** -8 * logits.abs().amax(1)
    return bool((chosen >= logits.amax(1) - tol).all())


def test_warmup_of_an_eager_engine_does_nothing(tiny, tokenizer):
    llm = LLM(copy.deepcopy(tiny), tokenizer=tokenizer, num_blocks=16, block_size=4, max_model_len=64)
    lines = []
    llm.warmup(lines.append)
    assert lines == [] and llm.stats()["steps"] == 0
    llm.close()
