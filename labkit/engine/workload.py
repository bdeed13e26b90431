"""Workloads for the engine and the code that drives them: what `labkit bench engine`,
notebooks 06 and 08 and `labkit.engine.widgets` measure with.

- `chat_workload`: chat-shaped requests (log-normal lengths, Poisson arrivals), also what
  `labkit.profile.timeline`'s scheduler simulator runs;
- `drive_engine`: feed requests at their arrival times, step the engine, summarize latency;
- `engine_static`: one fixed batch, every sequence generating the same number of tokens;
- `profile_decode`: where a batch-1 decode step's time goes, kernel by kernel;
- `text_ids`: real text as token ids, to cut prompts from.

Every answer is forced to its length (`greedy`: temperature 0, ignore_eos), so every
server does equal work and the timings compare.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from labkit.kernels.measure import synchronize
from labkit.models.sampling import SamplingParams

PROFILE_STEPS = 16


@dataclass
class Req:
    arrival: float          # seconds after the start
    prompt: list[int]
    output_len: int


def greedy(max_tokens: int) -> SamplingParams:
    """Greedy sampling of exactly `max_tokens` tokens (end-of-sequence ignored)."""
    return SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)


def text_ids(vocab: int, tokenizer: str | None = None) -> list[int]:
    """The evaluation text as token ids of the embedded model's tokenizer (or `tokenizer`'s),
    ids outside `vocab` dropped."""
    from labkit.models import Tokenizer, resolve
    from labkit.texts import eval_text

    ids = Tokenizer(tokenizer or resolve("embedded")).encode(eval_text())
    return [i for i in ids if i < vocab]


def chat_workload(n: int, rate: float, scale: float, vocab: int, seed: int = 0, text_ids: list[int] | None = None,
                  max_len: int = 2048, spread: float = 1.0) -> list[Req]:
    """Chat-shaped requests: log-normal prompt and answer lengths, Poisson arrivals.

    The shape follows the ShareGPT conversations used by vLLM's and LMDeploy's throughput
    benchmarks: prompt tokens with median ~130 and a long tail (sigma 1.0), answers with
    median ~150 (sigma 0.9), clipped to [4, 1024]; `scale` shrinks both for small machines
    (0.25 on a CPU), `spread` multiplies both sigmas. Arrivals are exponential gaps at `rate`
    requests per unit of time (seconds for an engine, steps for `labkit.profile.timeline`'s
    simulator; `math.inf`: all at time 0). Prompts are cut from real text when `text_ids` is
    given (else random ids); each answer is forced to its drawn length (ignore_eos), as
    profile_throughput does, so every server does equal work.
    """
    rng = np.random.default_rng(seed)
    t, out = 0.0, []
    for _ in range(n):
        t += rng.exponential(1 / rate)
        p = int(np.clip(rng.lognormal(math.log(130 * scale), 1.0 * spread), 4, 1024 * scale))
        o = int(np.clip(rng.lognormal(math.log(150 * scale), 0.9 * spread), 4, 1024 * scale))
        p, o = min(p, max_len // 2), min(o, max_len // 2 - 1)
        if text_ids and len(text_ids) > p:
            start = int(rng.integers(0, len(text_ids) - p))
            prompt = text_ids[start:start + p]
        else:
            prompt = rng.integers(10, vocab, p).tolist()
        out.append(Req(t, prompt, o))
    return out


def percentiles(xs: list[float], scale: float = 1000.0) -> dict:
    if not xs:
        return {}
    a = np.asarray(xs) * scale
    return {"mean": round(float(a.mean()), 2), "p50": round(float(np.percentile(a, 50)), 2),
            "p90": round(float(np.percentile(a, 90)), 2), "p99": round(float(np.percentile(a, 99)), 2)}


def summarize(name: str, reqs: list[Req], first: list[float], finish: list[float], itl: list[float],
              start: float) -> dict:
    """Request throughput over the makespan (first arrival to last finish), TTFT and ITL in ms."""
    makespan = max(finish) - start
    out_tokens = sum(r.output_len for r in reqs)
    return {"server": name, "requests": len(reqs), "makespan_s": round(makespan, 2),
            "req_per_s": round(len(reqs) / makespan, 3), "output_tok_s": round(out_tokens / makespan, 1),
            "ttft_ms": percentiles([f - (start + r.arrival) for f, r in zip(first, reqs)]),
            "itl_ms": percentiles(itl)}


def drive_engine(llm, reqs: list[Req], name: str) -> dict:
    """Feed requests at their arrival times and run engine steps in this thread."""
    from labkit.engine.sequence import Sequence

    engine = llm.engine
    times: dict[int, list[float]] = {i: [] for i in range(len(reqs))}
    pending = list(enumerate(reqs))
    start = time.perf_counter()
    while pending or engine.has_work():
        now = time.perf_counter() - start
        while pending and pending[0][1].arrival <= now:
            i, r = pending.pop(0)
            seq = Sequence(r.prompt, greedy(r.output_len), request_id=f"{name}-{i}")
            engine.add(seq, lambda d, i=i: times[i].append(time.perf_counter()))
        if engine.has_work():
            engine.step()
        elif pending:
            time.sleep(max(0.0, pending[0][1].arrival - (time.perf_counter() - start)))
    first = [times[i][0] for i in range(len(reqs))]
    finish = [times[i][-1] for i in range(len(reqs))]
    itl = [b - a for i in range(len(reqs)) for a, b in zip(times[i], times[i][1:])]
    return summarize(name, reqs, first, finish, itl, start)


def static_row(batch: int, total: float, output_len: int, ttft: list[float], step: float) -> dict:
    """A static batch's line: mean TTFT, decode step, per-sequence and total output rates."""
    return {"batch": batch, "ttft_ms": round(1000 * float(np.mean(ttft)), 1), "decode_ms_per_step": round(1000 * step, 2),
            "decode_tok_s_per_seq": round(1 / step, 1), "output_tok_s": round(batch * output_len / total, 1),
            "total_s": round(total, 2)}


def engine_static(llm, batch: int, prompts: list[list[int]], output_len: int) -> dict:
    """The first `batch` prompts as one batch, each generating `output_len` tokens."""
    runner = llm.engine.runner
    runner.event_pairs = [] if runner.graphs else None
    synchronize()
    start = time.perf_counter()
    outs = llm.generate(prompts[:batch], greedy(output_len))
    synchronize()
    total = time.perf_counter() - start
    ttft = [o.first_token_time - start for o in outs]
    steps = [b - a for o in outs for a, b in zip(o.token_times, o.token_times[1:])]
    row = static_row(batch, total, output_len, ttft, float(np.mean(steps)) if steps else float("nan"))
    if runner.event_pairs:   # the decode graph's own GPU time: the rest of a step is host work
        row["graph_gpu_ms"] = round(float(np.median([a.elapsed_time(b) for a, b in runner.event_pairs])), 3)
    runner.event_pairs = None
    return row


def profile_decode(llm, prompt: list[int], steps: int = PROFILE_STEPS, top: int = 30) -> dict:
    """Where a batch-1 decode step's time goes: the GPU's kernels (on a GPU, CUDA-graph replays
    included) or the CPU's operators (self time), per step over `steps` decode steps. The
    prefill runs before the profiler starts; wall time per step is under the profiler."""
    from torch.profiler import ProfilerActivity, profile

    from labkit.engine.sequence import Sequence

    engine = llm.engine
    gpu = engine.runner.device.type == "cuda"
    engine.add(Sequence(prompt, greedy(steps + 1), request_id="profile"))
    engine.step()   # the prefill (and the first token)
    with profile(activities=[ProfilerActivity.CPU] + [ProfilerActivity.CUDA] * gpu) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            engine.step()
        synchronize()
        wall = time.perf_counter() - start
    while engine.has_work():
        engine.step()
    totals: dict[str, list] = {}
    timeline: dict = {}
    if gpu:
        spans = []
        for e in prof.events():
            if e.device_type == torch.autograd.DeviceType.CUDA:
                row = totals.setdefault(e.name, [0, 0.0])
                row[0], row[1] = row[0] + 1, row[1] + e.device_time
                if not e.name.startswith(("Memcpy", "Memset")):
                    spans.append((e.time_range.start, e.time_range.end))
        timeline = kernel_timeline(spans, steps)
    else:
        for e in prof.key_averages():
            totals[e.key] = [e.count, e.self_cpu_time_total]
    rows = sorted(({"name": name, "calls_per_step": round(n / steps, 2), "us_per_step": round(us / steps, 1)}
                   for name, (n, us) in totals.items()), key=lambda r: -r["us_per_step"])
    return {"unit": "GPU kernels" if gpu else "CPU operators (self time)", "steps": steps,
            "wall_ms_per_step": round(1000 * wall / steps, 3),
            "total_us_per_step": round(sum(r["us_per_step"] for r in rows), 1), **timeline, "rows": rows[:top]}


HOST_GAP_US = 50.0   # a longer pause between two kernels is host work between steps, not a launch gap


def kernel_timeline(spans: list[tuple[float, float]], steps: int) -> dict:
    """Kernels per step, and the gap from one kernel's end to the next one's start inside a step
    (us; negative where two kernels overlap), from the (start, end) of every kernel of `steps`
    steps. At batch 1 every kernel pays this gap on top of its own time."""
    spans = sorted(spans)
    gaps = [b[0] - a[1] for a, b in zip(spans, spans[1:])]
    inside = [g for g in gaps if g < HOST_GAP_US]
    return {"kernels_per_step": round(len(spans) / steps, 1),
            "gap_us_median": round(float(np.median(inside)), 2) if inside else None,
            "gap_us_mean": round(float(np.mean(inside)), 2) if inside else None,
            "gap_us_per_step": round(sum(inside) / steps, 1)}
