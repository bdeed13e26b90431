"""Eager prefill steps with and without cached Numba views, side by side in one run (GPU).

    python docs/bench/prefill_views.py [TOKENIZER_FOLDER]

Llama-2-7B shapes with random weights, int4 (W4A16), the numba backend, `compile=True`.
Prefill is not graph-captured, so its speed is host time: this times prefill steps of 37,
128 and 512 tokens (medians of 3, each variant twice, interleaved) with `launch.as_array`
as it is (views cached by address, dtype, shape and strides) and with a fresh
`cuda.as_cuda_array` per launch argument, then `generate` of 128 + 64 tokens with each.
Numbers in docs/benchmarks.md ("Eager steps").
"""
import statistics
import sys
import time

import torch
from numba import cuda

from labkit.engine import LLM
from labkit.engine.bench import random_model
from labkit.kernels import launch as L
from labkit.models import Tokenizer, resolve
from labkit.models.sampling import SamplingParams

tokenizer = Tokenizer(sys.argv[1] if len(sys.argv) > 1 else resolve("embedded"))
llm = LLM(random_model("llama-2-7b", "cuda", torch.float16), tokenizer=tokenizer, backend="numba", weights="int4",
          max_batch_size=8, max_model_len=2048, num_blocks=1024, compile=True)
one_token = SamplingParams(temperature=0, max_tokens=1, ignore_eos=True)
offset = [1000]


def prefill_ms(n: int) -> float:
    """One engine step that prefills a fresh n-token prompt (no prefix-cache hit)."""
    offset[0] += 611
    seq = llm._sequence([(offset[0] + i) % 31000 + 100 for i in range(n)], one_token, None)
    torch.cuda.synchronize()
    start = time.perf_counter()
    llm.engine.add(seq)
    llm.engine.step()
    torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - start)


variants = {"cached views": L.as_array, "as_cuda_array": lambda t: cuda.as_cuda_array(t.detach(), sync=False)}
for n in (128, 512):
    prefill_ms(n)  # warm up: kernels compiled for both shapes
for n in (37, 128, 512):
    for name in list(variants) * 2:
        L.as_array = variants[name]
        times = [prefill_ms(n) for _ in range(3)]
        print(f"prefill {n:4d} tokens, {name:14s}: median {statistics.median(times):.1f} ms  "
              f"{[round(x, 1) for x in times]}", flush=True)
answer = SamplingParams(temperature=0, max_tokens=64, ignore_eos=True)
for name, fn in variants.items():
    L.as_array = fn
    start = time.perf_counter()
    llm.generate([[(7 * i) % 31000 + 100 for i in range(128)]], answer)
    torch.cuda.synchronize()
    print(f"generate 128 + 64 tokens, {name}: {1000 * (time.perf_counter() - start):.0f} ms", flush=True)
L.as_array = variants["cached views"]
