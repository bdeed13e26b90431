"""`LLM(..., tp=2)` on this CPU (gloo, two processes) computes what one process computes: in
float32, the logits of every step and the greedy answers; for an int4 checkpoint, which the
engine runs on a CPU through bfloat16 kernels (labkit.quant.cpu), the first step's logits
within bfloat16 rounding (test_tp_model checks the same checkpoint in float32)."""
from __future__ import annotations

import pytest
import torch

from labkit.engine import LLM
from labkit.models.sampling import SamplingParams
from labkit.profile.parallel import collectives_per_step

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


def one_and_two(path: str, h):
    one = LLM(path, **h.ENGINE)
    tokens_1, logits_1 = run(one, h.PROMPTS)
    one.close()
    with LLM(path, tp=2, **h.ENGINE) as two:
        assert two.model.config.num_attention_heads == 2   # rank 0 holds half the heads
        two.tp.comm.timing = True
        tokens_2, logits_2 = run(two, h.PROMPTS)
        again, _ = run(two, h.PROMPTS)   # now from the prefix cache: blocks agree across ranks
        # per step: two all-reduces per layer, the embedding's, the logits' all-gather
        per_step = collectives_per_step(two.model.config) + 1
        assert two.tp.comm.calls == two.engine.steps * per_step
    assert again == tokens_2
    return tokens_1, logits_1, tokens_2, logits_2


def test_fp32_tp2_equals_one_process(full_dir, h):
    tokens_1, logits_1, tokens_2, logits_2 = one_and_two(str(full_dir), h)
    assert tokens_2 == tokens_1
    assert len(logits_2) == len(logits_1)
    for a, b in zip(logits_1, logits_2):
        # the ranks add partial sums of 32-64 terms in another order than one matmul: a few
        # float32 ulps of the largest logit (measured ~1e-6), far below any gap an argmax sees
        assert (a - b).abs().max() <= 1e-5 * a.abs().max()


def test_int4_checkpoint_tp2_within_bfloat16_rounding(int4_dir, h):
    _, logits_1, tokens_2, logits_2 = one_and_two(str(int4_dir), h)
    assert [len(t) for t in tokens_2] == [10] * len(h.PROMPTS)
    a, b = logits_1[0], logits_2[0]   # the prefills: the same inputs on both
    # bfloat16 activations (unit roundoff 2^-9); the split changes where partial sums are
    # rounded, through two layers whose weights were scaled up 4x: measured 1.4% of the largest logit
    tol = 0.04 * a.abs().max()
    assert (a - b).abs().max() <= tol
    top2 = a.topk(2, -1).values
    clear = top2[:, 0] - top2[:, 1] > 2 * tol   # rows whose winner no rounding of that size can change
    assert torch.equal(a.argmax(-1)[clear], b.argmax(-1)[clear])
