"""`LLM(..., tp=2)` on this CPU (gloo, two processes) computes what one process computes:
the logits of every step and the greedy answers, full precision and int4."""
from __future__ import annotations

import pytest
import torch

from labkit.engine import LLM
from labkit.models.sampling import SamplingParams

pytestmark = pytest.mark.slow   # each tp=2 engine starts a second Python process with torch (~5-10 s)


def run(llm: LLM, prompts: list[str]) -> tuple[list[list[int]], list[torch.Tensor]]:
    """Greedy answers, and the logits every step sampled from (in step order)."""
    seen, sample = [], llm.engine.sample

    def recording(logits, seqs):
        seen.append(logits.clone())
        return sample(logits, seqs)

    llm.engine.sample = recording
    outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=10, ignore_eos=True))
    llm.engine.sample = sample
    return [o.token_ids for o in outs], seen


@pytest.mark.parametrize("folder", ["full_dir", "int4_dir"])
def test_tp2_equals_one_process(folder, request, h):
    path = str(request.getfixturevalue(folder))
    one = LLM(path, **h.ENGINE)
    tokens_1, logits_1 = run(one, h.PROMPTS)
    one.close()
    with LLM(path, tp=2, **h.ENGINE) as two:
        assert two.model.config.num_attention_heads == 2   # rank 0 holds half the heads
        tokens_2, logits_2 = run(two, h.PROMPTS)
        again, _ = run(two, h.PROMPTS)   # now from the prefix cache: blocks agree across ranks
    assert tokens_2 == tokens_1 and again == tokens_1
    assert len(logits_2) == len(logits_1)
    for a, b in zip(logits_1, logits_2):
        # fp32; the ranks add partial sums of 32-64 terms in another order than one matmul:
        # differences of a few float32 ulps of the largest logit, far below any gap an argmax sees
        scale = a.abs().max()
        assert (a - b).abs().max() <= 1e-5 * scale, ((a - b).abs().max(), scale)
