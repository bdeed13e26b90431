"""`labkit bench engine [MODEL] [--json]`: the engine against static batching and HF transformers.

Three measurements, all in one run on one machine, so the ratios are fair (and a profile):

- **static** (LMDeploy's profile_generation): a fixed batch of B prompts of `--input-len`
  tokens, each generating exactly `--output-len` tokens. Time to first token, decode latency
  per step, output tokens/s. The peer is HF transformers `generate` on the same batch.
- **dynamic** (LMDeploy's profile_throughput): `--requests` chat requests arrive as a Poisson
  process at `--rate` requests/s; their prompt and answer lengths are drawn from a log-normal
  distribution shaped like public chat logs (see `chat_workload`). Served three ways:
  continuous batching, static batching (the engine's static scheduler: a batch runs to
  completion before the next is admitted) and HF `generate` on static batches. Request
  throughput, output tokens/s, time-to-first-token and inter-token latency percentiles.
- **multi-turn**: a conversation whose history grows turn by turn; time to first token of
  each turn with and without prefix caching.
- **profile** (`--mode profile`, not part of `all`): where a batch-1 decode step's time goes,
  GPU kernel by kernel (or CPU operator by operator), per step.

On a GPU, `--shape llama-2-7b` builds random weights with Llama-2-7B's shapes (speed does not
depend on the values) and `--weights fp16,int4` compares fp16 with W4A16 (numba backend).
The batch-1 decode rate is also compared with the bandwidth roofline: weight bytes read per
token / the device-to-device copy bandwidth measured in the same run.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import random
import sys
import time
from contextlib import contextmanager

import numpy as np
import torch

from labkit.engine.workload import (Req, chat_workload, drive_engine, engine_static, greedy, percentiles,
                                    profile_decode, static_row, summarize, synchronize, text_ids)
from labkit.kernels import measure

#: --shape NAME -> the preset whose shapes the random weights take
SHAPES = {"llama-2-7b": "Llama-2-7B"}


# ----------------------------------------------------------------------------- HF transformers

class _StepClock:
    """A logits processor that notes the time of every generation step (one per new token)."""

    def __init__(self):
        self.times: list[float] = []

    def __call__(self, input_ids, scores):
        self.times.append(time.perf_counter())
        return scores


def hf_generate(hf, prompts: list[list[int]], max_new: int, pad_id: int) -> tuple[list[float], float]:
    """Left-padded batch generate; returns the step times and the start time."""
    from transformers import LogitsProcessorList

    device = next(hf.parameters()).device
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    clock = _StepClock()
    synchronize()
    start = time.perf_counter()
    with torch.inference_mode():
        hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, min_new_tokens=max_new,
                    do_sample=False, logits_processor=LogitsProcessorList([clock]), pad_token_id=pad_id)
    synchronize()
    return clock.times, start


def hf_static(hf, batch: int, prompts: list[list[int]], output_len: int, pad_id: int) -> dict:
    times, start = hf_generate(hf, prompts[:batch], output_len, pad_id)
    steps = np.diff(times)
    return static_row(batch, times[-1] - start, output_len, [times[0] - start] * batch,
                       float(steps.mean()) if len(steps) else float("nan"))


def drive_hf(hf, reqs: list[Req], max_batch: int, pad_id: int) -> dict:
    """Static batches for HF: when idle, take the requests that have arrived (up to
    max_batch) and generate until the longest answer is done; a request's tokens are the
    first `output_len` steps of its row."""
    first, finish, itl = [0.0] * len(reqs), [0.0] * len(reqs), []
    queue = list(range(len(reqs)))
    start = time.perf_counter()
    while queue:
        now = time.perf_counter() - start
        if reqs[queue[0]].arrival > now:
            time.sleep(reqs[queue[0]].arrival - now)
            continue
        take = [i for i in queue if reqs[i].arrival <= now][:max_batch]
        queue = [i for i in queue if i not in take]
        times, _ = hf_generate(hf, [reqs[i].prompt for i in take], max(reqs[i].output_len for i in take), pad_id)
        for i in take:
            n = reqs[i].output_len
            first[i], finish[i] = times[0], times[n - 1]
            itl += np.diff(times[:n]).tolist()
    return summarize("hf_generate", reqs, first, finish, itl, start)


def load_hf(spec: str, device: str, dtype: torch.dtype, shape: str | None):
    import transformers

    if shape:
        with building(dtype, device):
            model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**shape_config(shape).to_hf()))
        return model.eval()
    from labkit.models import resolve

    return transformers.LlamaForCausalLM.from_pretrained(resolve(spec), dtype=dtype).to(device).eval()


# ----------------------------------------------------------------------------- building engines

def shape_config(shape: str):
    """The config of a `--shape` (a preset of `labkit.profile.configs`)."""
    from labkit.profile.configs import preset

    return preset(SHAPES[shape])


@contextmanager
def building(dtype: torch.dtype, device: str):
    """Modules built inside are made on `device` in `dtype` (torch's default dtype is restored after)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def random_model(shape: str, device: str, dtype: torch.dtype):
    """Llama with random weights of a real model's shapes, built on the device."""
    from labkit.models.llama import Llama, rope_frequencies

    cfg = shape_config(shape)
    with building(dtype, device):
        model = Llama(cfg)
    model.inv_freq = rope_frequencies(cfg).to(device)
    return model.eval()


def make_llm(args, weights: str, scheduler: str = "continuous", prefix: bool = True, max_batch: int | None = None,
             tp: int = 1):
    from labkit.engine import LLM
    from labkit.models import Tokenizer, resolve

    common = dict(backend=args.backend, scheduler=scheduler, enable_prefix_caching=prefix, compile=args.compile,
                  max_batch_size=max_batch or args.max_batch_size, max_model_len=args.max_model_len,
                  cache_max_entry_count=args.cache_max_entry_count,
                  weights=None if weights in ("fp32", "fp16") else weights, tp=tp)
    if args.shape:   # split over several GPUs: built on the CPU, each rank moves its own shard
        model = random_model(args.shape, "cpu" if tp > 1 else args.device, torch.float16)
        return LLM(model, tokenizer=Tokenizer(args.tokenizer or resolve("embedded")), **common)
    return LLM(args.model, device=args.device, **common)


def decode_weight_bytes(model) -> int:
    """Weight bytes read per decoded token, as stored (state dict): all but the embedding
    table, of which one row is read (a tied vocabulary projection reads it all)."""
    emb = model.model.embed_tokens.weight
    seen, total = set(), 0
    for name, t in model.state_dict().items():
        if t.data_ptr() in seen or (t.data_ptr() == emb.data_ptr() and name != "lm_head.weight"):
            continue
        seen.add(t.data_ptr())
        total += t.nbytes
    return total


# ----------------------------------------------------------------------------- the runs

def run_static(args, result: dict, source: list[int]) -> None:
    def prompts_at(first: int, count: int) -> list[list[int]]:
        return [source[(first + i) * 37:(first + i) * 37 + args.input_len] for i in range(count)]

    prompts = prompts_at(0, max(args.batch_sizes))
    rows = []
    for weights in args.weights:
        llm = make_llm(args, weights, max_batch=max(args.batch_sizes))
        # every warm-up and timed batch gets prompts of its own: a timed run must prefill in
        # full, not find its prompts in the prefix cache
        first = 0
        for b in args.batch_sizes:
            # warm up this shape (kernels compiled for it); a compiled CPU step compiles again for
            # each kind of step it meets (batch 1, a few rows, many rows), so it warms up in full
            llm.generate(prompts_at(first, b), greedy(args.output_len if args.compile else 3))
            row = {"server": f"labkit {weights}", **engine_static(llm, b, prompts_at(first + b, b), args.output_len)}
            first += 2 * b
            if b == 1:
                row["weight_bytes"] = decode_weight_bytes(llm.model)
            rows.append(row)
            measure.log(f"static {row}")
        llm.close()
        del llm
        measure.free_memory()
    if not args.no_hf:
        hf = load_hf(args.model, args.device, torch.float16 if args.device.startswith("cuda") else torch.float32,
                     args.shape)
        hf_static(hf, 1, prompts, 4, 0)   # warm up
        for b in args.hf_batch_sizes or args.batch_sizes:
            row = {"server": f"hf {'fp16' if args.device.startswith('cuda') else 'fp32'}",
                   **hf_static(hf, b, prompts, args.output_len, 0)}
            rows.append(row)
            measure.log(f"static {row}")
        del hf
        measure.free_memory()
    result["static"] = rows


def run_dynamic(args, result: dict, source: list[int], vocab: int) -> None:
    reqs = chat_workload(args.requests, args.rate, args.scale, vocab, args.seed, source, args.max_model_len or 2048)
    weights = args.weights[-1]
    rows = []
    for scheduler in ("continuous", "static"):
        llm = make_llm(args, weights, scheduler)
        llm.generate([reqs[0].prompt], greedy(2))
        rows.append({**drive_engine(llm, reqs, scheduler), "weights": weights})
        measure.log(f"dynamic {rows[-1]}")
        llm.close()
        del llm
        measure.free_memory()
    if not (args.no_hf or args.no_hf_dynamic):
        hf = load_hf(args.model, args.device, torch.float16 if args.device.startswith("cuda") else torch.float32,
                     args.shape)
        rows.append(drive_hf(hf, reqs, args.max_batch_size, 0))
        measure.log(f"dynamic {rows[-1]}")
        del hf
        measure.free_memory()
    lengths = {"prompt_tokens": percentiles([len(r.prompt) for r in reqs], 1),
               "output_tokens": percentiles([r.output_len for r in reqs], 1)}
    result["dynamic"] = {"workload": {"requests": len(reqs), "rate_req_s": args.rate, "scale": args.scale,
                                      "seed": args.seed, **lengths}, "rows": rows}


def run_multi_turn(args, result: dict, source: list[int]) -> None:
    """A conversation of `--turns` turns: each adds a user message and an answer to the
    history; TTFT per turn with and without prefix caching."""
    rng = random.Random(args.seed)
    user, answer = int(64 * args.scale * 4), int(32 * args.scale * 4)
    out = {}
    weights = args.weights[-1]
    system = source[:int(256 * args.scale * 4)]
    for prefix in (True, False):
        llm = make_llm(args, weights, prefix=prefix, max_batch=1)
        # warm up on other tokens, a prefill and then one that extends it (a prefix hit, when
        # caching): the first prefills of each kind pay one-off costs (kernels loaded, cuBLAS
        # plans), which belong to neither column
        warm = system[::-1] + source[:user]
        llm.generate([warm], greedy(2))
        llm.generate([warm + source[user:2 * user]], greedy(2))
        history = system
        ttft, cached = [], []
        for turn in range(args.turns):
            start = rng.randrange(0, len(source) - user)
            history = history + source[start:start + user]
            o = llm.generate([history], greedy(answer))[0]
            ttft.append(o.ttft)
            cached.append(o.cached_tokens)
            history = history + o.token_ids
        out["with_prefix_cache" if prefix else "without"] = {"ttft_ms": [round(1000 * t, 1) for t in ttft],
                                                             "cached_tokens": cached,
                                                             "final_history_tokens": len(history)}
        llm.close()
        del llm
        measure.free_memory()
        measure.log(f"multi-turn prefix={prefix}: {out}")
    result["multi_turn"] = out


def run_profile(args, result: dict, source: list[int]) -> None:
    out = {}
    for weights in args.weights:
        llm = make_llm(args, weights, max_batch=1)
        llm.generate([source[37:37 + args.input_len]], greedy(3))   # warm up: kernels compiled, graphs captured
        out[weights] = profile_decode(llm, source[:args.input_len])
        measure.log(f"profile {weights}: {out[weights]['wall_ms_per_step']} ms per step")
        llm.close()
        del llm
        measure.free_memory()
    result["profile"] = out


def ratios(result: dict) -> dict:
    """The numbers the targets are stated in."""
    r: dict = {}
    static = result.get("static", [])
    b1 = {row["server"]: row for row in static if row["batch"] == 1}
    hf = next((v for k, v in b1.items() if k.startswith("hf")), None)
    for name, row in b1.items():
        if name.startswith("labkit"):
            if hf:
                r[f"{name} / hf batch-1 decode"] = round(row["decode_tok_s_per_seq"] / hf["decode_tok_s_per_seq"], 2)
            if result.get("copy_bandwidth_gbs") and row.get("weight_bytes"):
                roof = result["copy_bandwidth_gbs"] * 1e9 / row["weight_bytes"]
                r[f"{name} roofline tok/s"] = round(roof, 1)
                r[f"{name} fraction of roofline"] = round(row["decode_tok_s_per_seq"] / roof, 3)
    names = [n for n in b1 if n.startswith("labkit")]
    if len(names) == 2:
        r[f"{names[1]} / {names[0]} batch-1 decode"] = round(b1[names[1]]["decode_tok_s_per_seq"] /
                                                            b1[names[0]]["decode_tok_s_per_seq"], 2)
    dyn = {row["server"]: row for row in result.get("dynamic", {}).get("rows", [])}
    if "continuous" in dyn and "static" in dyn:
        r["continuous / static request throughput"] = round(dyn["continuous"]["req_per_s"] / dyn["static"]["req_per_s"], 2)
    if "continuous" in dyn and "hf_generate" in dyn:
        r["continuous / hf request throughput"] = round(dyn["continuous"]["req_per_s"] / dyn["hf_generate"]["req_per_s"], 2)
    mt = result.get("multi_turn")
    if mt:
        w, wo = mt["with_prefix_cache"]["ttft_ms"][1:], mt["without"]["ttft_ms"][1:]
        if w and wo:
            r["multi-turn TTFT speedup from prefix caching (turns 2+)"] = round(float(np.mean(wo) / np.mean(w)), 2)
    return r


# ----------------------------------------------------------------------------- CLI

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="labkit bench engine", description=__doc__.split("\n")[0])
    p.add_argument("model", nargs="?", default="embedded")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--device", default=None)
    p.add_argument("--backend", default=None, choices=["torch", "numba"])
    p.add_argument("--shape", choices=sorted(SHAPES), help="random weights of this model's shapes (GPU)")
    p.add_argument("--tokenizer", default=None, help="folder with tokenizer.json for --shape (default: the embedded model's)")
    p.add_argument("--weights", default=None,
                   help="comma list of weight formats for the engine: fp32|fp16|bf16|int8|int4 "
                        "(default: fp32,int4 on CPU, fp16,int4 on GPU); the last one serves dynamic and multi-turn")
    p.add_argument("--mode", default="all", choices=["all", "static", "dynamic", "multi-turn", "profile"],
                   help="profile: where a batch-1 decode step's time goes, kernel by kernel (not part of all)")
    p.add_argument("--batch-sizes", default="1,8,32")
    p.add_argument("--hf-batch-sizes", default=None, help="batch sizes for the HF peer (default: --batch-sizes)")
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--requests", type=int, default=None, help="dynamic: number of requests")
    p.add_argument("--rate", type=float, default=None,
                   help="dynamic: arrivals per second (default: 20 on a CPU, 100 on a GPU)")
    p.add_argument("--scale", type=float, default=None, help="dynamic: length scale of the chat distribution")
    p.add_argument("--turns", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--cache-max-entry-count", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    p.add_argument("--no-hf", action="store_true", help="skip the HF transformers peer")
    p.add_argument("--compile", action="store_true", help="torch.compile the decode step before graph capture (GPU)")
    p.add_argument("--no-hf-dynamic", action="store_true", help="HF only in the static mode (it is slow on long loads)")
    p.add_argument("--tp", type=int, default=1,
                   help="compare tp=1 with tensor parallelism over this many GPUs (CPU processes) on static "
                        "batches, in place of the modes (labkit.engine.parallel.bench)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    gpu = torch.cuda.is_available() and (args.device or "cuda").startswith("cuda")
    args.device = args.device or ("cuda" if gpu else "cpu")
    args.backend = args.backend or ("numba" if gpu else "torch")
    args.weights = (args.weights or ("fp16,int4" if gpu else "fp32,int4")).split(",")
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    args.hf_batch_sizes = [int(b) for b in args.hf_batch_sizes.split(",")] if args.hf_batch_sizes else None
    args.requests = args.requests or (200 if gpu else 48)
    # arrivals must outpace the server, or the measured throughput is the arrival rate's (a GPU
    # keeps up with 20/s: docs/benchmarks.md, Engine)
    args.rate = args.rate or (100.0 if gpu else 20.0)
    args.scale = args.scale or (1.0 if gpu else 0.25)
    args.max_model_len = args.max_model_len or (4096 if gpu else 1024)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {"suite": "engine", "date": datetime.date.today().isoformat(),
              "command": "labkit bench engine " + " ".join(argv or []),
              "device": torch.cuda.get_device_name() if gpu else f"{platform.processor() or 'cpu'} ({torch.get_num_threads()} threads)",
              "model": args.shape + " (random weights)" if args.shape else args.model,
              "backend": args.backend, "torch": torch.__version__}
    result["copy_bandwidth_gbs"] = round(measure.copy_bandwidth(device=args.device), 1) if gpu else None
    vocab = shape_config(args.shape).vocab_size if args.shape else 49152
    source = text_ids(vocab, args.tokenizer)
    if args.tp > 1:
        from labkit.engine.parallel.bench import run_tp

        run_tp(args, result, source, make_llm)
        args.mode = "tp"
    if args.mode in ("all", "static"):
        run_static(args, result, source)
    if args.mode in ("all", "dynamic"):
        run_dynamic(args, result, source, vocab)
    if args.mode in ("all", "multi-turn"):
        run_multi_turn(args, result, source)
    if args.mode == "profile":
        run_profile(args, result, source)
    result["ratios"] = ratios(result)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    print(json.dumps(result) if args.json else format_tables(result))
    return 0


def format_tables(result: dict) -> str:
    lines = [f"labkit bench engine · {result['device']} · {result['model']} · backend {result['backend']} · {result['date']}"]
    if result.get("static"):
        lines.append("\nstatic: batch, TTFT ms, decode ms/step, tok/s per sequence, output tok/s")
        for r in result["static"]:
            lines.append(f"  {r['server']:<16} B={r['batch']:<3} {r['ttft_ms']:>8} {r['decode_ms_per_step']:>8} "
                         f"{r['decode_tok_s_per_seq']:>8} {r['output_tok_s']:>9}")
    if result.get("tp"):
        from labkit.engine.parallel.bench import format_tp

        lines += format_tp(result["tp"])
    if result.get("dynamic"):
        w = result["dynamic"]["workload"]
        lines.append(f"\ndynamic: {w['requests']} requests at {w['rate_req_s']}/s, prompt {w['prompt_tokens']}, "
                     f"output {w['output_tokens']}")
        for r in result["dynamic"]["rows"]:
            lines.append(f"  {r['server']:<12} {r['req_per_s']:>7} req/s {r['output_tok_s']:>8} tok/s  "
                         f"TTFT p50/p99 {r['ttft_ms'].get('p50')}/{r['ttft_ms'].get('p99')} ms  "
                         f"ITL p50/p99 {r['itl_ms'].get('p50')}/{r['itl_ms'].get('p99')} ms")
    if result.get("multi_turn"):
        for k, v in result["multi_turn"].items():
            lines.append(f"\nmulti-turn TTFT ms {k}: {v['ttft_ms']} (prompt tokens from the cache: {v['cached_tokens']})")
    for weights, prof in result.get("profile", {}).items():
        lines.append(f"\nprofile, {weights}, batch 1: {prof['unit']}, us per decode step over {prof['steps']} steps "
                     f"(total {prof['total_us_per_step']}; wall {prof['wall_ms_per_step']} ms per step under the profiler)")
        if "kernels_per_step" in prof:
            lines.append(f"  {prof['kernels_per_step']} kernels per step; gap between kernels median "
                         f"{prof['gap_us_median']} us, mean {prof['gap_us_mean']} us ({prof['gap_us_per_step']} us per step)")
        lines += [f"  {r['us_per_step']:>9.1f} us  {r['calls_per_step']:>7.2f} calls  {r['name'][:100]}" for r in prof["rows"]]
    lines.append("\nratios:")
    lines += [f"  {k}: {v}" for k, v in result["ratios"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
