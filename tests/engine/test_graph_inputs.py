"""The decode step a CUDA graph replays reads its inputs from static buffers padded to a bucket
(ModelRunner.graph_inputs / fill). On the CPU, without a graph: the padded buffers give the
same logits for the real rows as the step built the ordinary way, and padding rows touch
only the scratch block."""
import torch

from labkit.engine import LLM
from labkit.engine.model_runner import HostStep


def test_padded_static_inputs_give_the_same_logits(tiny, tokenizer, h):
    llm = LLM(tiny, tokenizer=tokenizer, num_blocks=64, block_size=4, max_batch_size=8, max_model_len=128)
    eng, runner = llm.engine, llm.engine.runner
    for prompt in h.prompts_of(tokenizer, 3, lengths=(5, 17, 9)):
        eng.add(llm._sequence(prompt, h.greedy(20), None))
    eng.drain()
    while any(not s.output_token_ids for s in eng.scheduler.running) or eng.scheduler.waiting:
        eng.step()
    batch = eng.scheduler.schedule()
    assert len(batch) == 3 and set(batch.num_tokens) == {1}
    step, _ = runner.prepare(batch)
    with torch.inference_mode():
        want = runner.forward(runner.to_device(step))
        written = {slot // runner.kv.block_size for slot in step.slots}   # rewritten by the real rows
        untouched = [b for b in range(runner.kv.num_blocks) if b not in written]   # the scratch block is not listed
        before = runner.kv.k[:, untouched].clone()
        inputs = runner.graph_inputs(8)
        runner.fill(inputs, step, 8)
        got = runner.forward(inputs)
        empty = runner.graph_inputs(8)
        runner.fill(empty, HostStep(), 8)                      # an empty step: all padding
    # float64 inside (summation order may differ), float32 logits out: at most one rounding apart
    torch.testing.assert_close(got[:3], want, rtol=0, atol=2 * torch.finfo(torch.float32).eps * want.abs().max().item())
    assert torch.equal(runner.kv.k[:, untouched], before)   # padding rows wrote only to the scratch block
    assert inputs.context_lens.tolist() == step.lens + [1] * 5
    assert set(empty.block_tables.flatten().tolist()) == {runner.kv.scratch_block}
