"""Time one batch-1 decode step of the engine on a GPU (Llama-2-7B shapes, random weights).

    python docs/bench/engine_step_time.py int4,fp16 [TOKENIZER_FOLDER]

For each weight format: build the engine (numba backend, torch.compile, one CUDA graph for
batch 1), decode a 128-token prompt, then time 50 engine steps (host work included) and 20
replays of the captured graph alone (CUDA events). A quicker check than `labkit bench engine`
when one change to the decode step is being measured.
"""
import sys
import time

import torch

from labkit.engine import LLM
from labkit.engine.bench import random_model
from labkit.models import Tokenizer, resolve
from labkit.models.sampling import SamplingParams


def step_times(weights: str, tokenizer: Tokenizer) -> tuple[float, float]:
    """(ms per engine step, ms per graph replay) for batch-1 decoding."""
    model = random_model("llama-2-7b", "cuda", torch.float16)
    llm = LLM(model, tokenizer=tokenizer, backend="numba", weights=None if weights == "fp16" else weights,
              max_batch_size=1, max_model_len=1024, num_blocks=256, compile=True)
    engine = llm.engine
    seq = llm._sequence(list(range(100, 228)), SamplingParams(temperature=0, max_tokens=400, ignore_eos=True), None)
    engine.add(seq)
    for _ in range(6):   # the prefill, then a few decodes
        engine.step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(50):
        engine.step()
    torch.cuda.synchronize()
    step_ms = 1000 * (time.perf_counter() - start) / 50
    graph = engine.runner.graphs[1][0]
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    for _ in range(20):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return step_ms, begin.elapsed_time(end) / 20


def main() -> None:
    tokenizer = Tokenizer(sys.argv[2] if len(sys.argv) > 2 else resolve("embedded"))
    print(f"{torch.cuda.get_device_name()} · batch 1 · Llama-2-7B shapes")
    for weights in sys.argv[1].split(","):
        step_ms, replay_ms = step_times(weights, tokenizer)
        print(f"{weights:5s} {step_ms:.3f} ms/step ({1000 / step_ms:.1f} tok/s), graph replay {replay_ms:.3f} ms")
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
