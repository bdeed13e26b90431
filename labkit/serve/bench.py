"""`labkit bench serve [MODEL]`: many concurrent streaming clients against the API server.

By default it starts the server in this process on a free loopback port (the engine and
the clients then share the machine, as they would on a laptop); `--url` measures a server
that is already running instead. For each concurrency level it sends `--requests` chat
requests (greedy, `--max-tokens` each) with that many in flight, and reports time to first
token, request latency (median and 95th percentile) and output tokens per second. Every
level has a deadline, so a stuck server ends the run instead of hanging it.

To compare, `--models` serves more models in turn with the same clients (the first
positional MODEL first), and `--baselines hf llama.cpp` adds batch-1 decode speed of Hugging
Face transformers (float32, `generate`) and of llama.cpp (llama-cpp-python, if installed,
on the GGUF file the embedded model ships as) on the same questions. `--rounds N` repeats
everything in alternating order, since a shared machine's speed drifts; the summary takes
each server's median over the rounds and gives the ratios.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from labkit.clitools import add_json_argument, add_model_argument, emit
from labkit.errors import UserError
from labkit.serve.client import QUESTIONS, LoadReport, chat_bodies, run_load


def add_arguments(p: argparse.ArgumentParser) -> None:
    from labkit.serve.engine_args import add_engine_arguments

    add_model_argument(p)
    p.add_argument("--url", default=None, help="measure this running server (e.g. http://127.0.0.1:23333) instead")
    p.add_argument("--model-name", default=None, help="the 'model' to send (default: MODEL)")
    p.add_argument("--api-key", default=None)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16], help="clients in flight, one run each")
    p.add_argument("--requests", type=int, default=32, help="requests per concurrency level")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--deadline", type=float, default=600.0, help="seconds allowed per concurrency level")
    p.add_argument("--models", nargs="+", default=[], metavar="MODEL",
                   help="serve these models too, in turn (e.g. a `labkit lite` checkpoint folder)")
    p.add_argument("--baselines", nargs="+", default=[], choices=["hf", "llama.cpp"],
                   help="batch-1 decode speed of transformers fp32 / llama.cpp on the same questions")
    p.add_argument("--rounds", type=int, default=1, help="repeat every server and baseline, alternating")
    add_json_argument(p)
    add_engine_arguments(p)


def device_name(device: str | None) -> str:
    import torch

    if (device or "").startswith("cuda") or (device is None and torch.cuda.is_available()):
        return torch.cuda.get_device_name(torch.device(device or "cuda"))
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"cpu ({os.cpu_count()} threads, {cpu})"


def measure(url: str, model: str, levels: list[int], requests: int, max_tokens: int, deadline: float,
            api_key: str | None = None) -> list[LoadReport]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    reports = []
    for c in levels:
        report, results = asyncio.run(run_load(url, chat_bodies(model, requests, max_tokens), c, deadline_s=deadline,
                                               headers=headers))
        report.decode_tok_s = decode_rate(results)
        reports.append(report)
    return reports


def decode_rate(results) -> float | None:
    """Median decode speed of the requests: tokens after the first over the time after the first."""
    rates = [(r.completion_tokens - 1) / (r.latency_s - r.ttft_s) for r in results
             if r.ok and (r.completion_tokens or 0) > 1 and r.ttft_s is not None and r.latency_s > r.ttft_s]
    return statistics.median(rates) if rates else None


def chat_prompts(tokenizer, n: int) -> list[list[int]]:
    return [tokenizer.encode_chat([{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]) for i in range(n)]


def hf_decode_rate(model: str, prompts: list[list[int]], max_tokens: int) -> float:
    """transformers fp32 on a CPU, batch 1: median over prompts of 1 / (mean time per token after the first)."""
    import torch

    try:
        from labkit.engine.workload import hf_generate, load_hf
    except ImportError:
        from labkit.engine.bench import hf_generate, load_hf

    hf = load_hf(model, "cpu", torch.float32, None)
    rates = []
    for ids in prompts:
        times, _ = hf_generate(hf, [ids], max_tokens, 0)
        rates.append((len(times) - 1) / (times[-1] - times[0]))
    return statistics.median(rates)


def llama_cpp_decode_rate(prompts: list[list[int]], max_tokens: int) -> tuple[float, str] | None:
    """llama.cpp (llama-cpp-python) on the embedded model's GGUF file, batch 1, greedy, as many
    threads as cores: (median decode tok/s, version), or None if it is not installed."""
    try:
        import llama_cpp
    except ImportError:
        return None
    from labkit.models.embedded import gguf_path

    llm = llama_cpp.Llama(str(gguf_path()), n_threads=os.cpu_count(), n_ctx=1024, verbose=False)
    rates = []
    for ids in prompts:
        llm.reset()
        times = []
        for _ in llm.generate(ids, temp=0.0):
            times.append(time.perf_counter())
            if len(times) == max_tokens:
                break
        rates.append((len(times) - 1) / (times[-1] - times[0]))
    return statistics.median(rates), llama_cpp.__version__


def table(reports: list[LoadReport], header: str) -> str:
    def s(x):
        return "-" if x is None else f"{x:.2f}"

    rows = [header, f"{'clients':>7} {'reqs':>5} {'ok':>4} {'tok/s':>8} {'req/s':>7} {'TTFT p50':>9} {'TTFT p95':>9} "
                    f"{'lat p50':>8} {'lat p95':>8}"]
    for r in reports:
        rows.append(f"{r.concurrency:>7} {r.requests:>5} {r.completed:>4} {r.tokens_per_s:>8.1f} {r.requests_per_s:>7.2f} "
                    f"{s(r.ttft_p50_s):>9} {s(r.ttft_p95_s):>9} {s(r.latency_p50_s):>8} {s(r.latency_p95_s):>8}")
        rows += [f"        error: {e}" for e in r.errors[:3]]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="labkit bench serve", description=__doc__.splitlines()[0])
    add_arguments(p)
    args = p.parse_args(argv)
    if min(args.concurrency) < 1 or args.requests < 1 or args.max_tokens < 1 or args.rounds < 1:
        raise UserError("--concurrency, --requests, --max-tokens and --rounds must be >= 1")
    if args.url and (args.models or args.baselines):
        raise UserError("--url measures one running server: no --models or --baselines with it")
    name = args.model_name or args.model
    result = {"suite": "serve", "date": datetime.date.today().isoformat(), "model": name,
              "max_tokens": args.max_tokens, "command": "labkit bench serve " + " ".join(argv or sys.argv[3:])}
    if args.url:
        reports = measure(args.url, name, args.concurrency, args.requests, args.max_tokens, args.deadline, args.api_key)
        result.update(device="remote server", url=args.url, levels=[r.to_dict() for r in reports])
        header = f"labkit bench serve · {name} · {args.url}"
        emit(result, args.json, table(reports, header))
        return 0 if all(r.failed == 0 for r in reports) else 1
    from labkit.serve.engine_args import build_engine, engine_kwargs

    kwargs = engine_kwargs(args)
    specs = [args.model, *args.models]
    engines = {spec: build_engine(spec, **kwargs) for spec in specs}
    prompts = chat_prompts(engines[args.model].tokenizer, 4)   # the baselines' questions (batch 1, one by one)
    runs: dict[str, list] = {spec: [] for spec in specs}
    base: dict[str, list[float]] = {b: [] for b in args.baselines}
    for _ in range(args.rounds):
        for spec in specs:
            runs[spec].append(serve_and_measure(engines[spec], spec if spec != args.model else name, args))
        for b in args.baselines:
            if b == "hf":
                base[b].append(hf_decode_rate(args.model, prompts, args.max_tokens))
            elif (got := llama_cpp_decode_rate(prompts, args.max_tokens)) is not None:
                base[b].append(got[0])
                result["llama_cpp"] = f"llama-cpp-python {got[1]}"
    result.update(device=device_name(args.device), backend=args.backend, max_batch_size=args.max_batch_size,
                  weights=args.weights, compile=args.compile, rounds=args.rounds,
                  servers={spec: [[r.to_dict() for r in reports] for reports in runs[spec]] for spec in specs},
                  baselines_decode_tok_s={b: [round(x, 2) for x in xs] for b, xs in base.items()},
                  engine_stats_after={spec: engines[spec].stats() for spec in specs})
    result["levels"] = result["servers"][args.model][-1]
    result["summary"] = summary(runs, base, args.concurrency)
    header = (f"labkit bench serve · {result['device']} · {args.requests} requests per level, "
              f"max_tokens {args.max_tokens}, greedy, {args.rounds} round(s)")
    text = "\n\n".join(table(runs[spec][-1], f"{header}\n{spec}") for spec in specs)
    text += "\n\n" + summary_table(result["summary"])
    emit(result, args.json, text)
    return 0 if all(r.failed == 0 for reports in runs.values() for rs in reports for r in rs) else 1


def serve_and_measure(llm, name: str, args) -> list[LoadReport]:
    from labkit.serve.api_server import ServerThread, create_app

    with ServerThread(create_app(llm, name)) as server, ThreadPoolExecutor(1) as clients:
        done = clients.submit(measure, server.url, name, args.concurrency, args.requests, args.max_tokens, args.deadline)
        llm.run_steps(until=done.done)   # the engine's steps in the main thread, as `labkit serve` runs them
        return done.result()


def summary(runs: dict[str, list], base: dict[str, list[float]], levels: list[int]) -> dict:
    """Per server: median over rounds of batch-1 decode tok/s and of output tok/s at each
    level; the ratios to the baselines and to the first server."""
    med = lambda xs: statistics.median(xs) if xs else None  # noqa: E731
    out = {"baselines": {b: med(xs) for b, xs in base.items()}, "servers": {}}
    for spec, rounds in runs.items():
        row = {"decode_tok_s_1": med([r[0].decode_tok_s for r in rounds if r[0].concurrency == 1 and r[0].decode_tok_s]),
               "tok_s": {c: med([r[i].tokens_per_s for r in rounds]) for i, c in enumerate(levels)}}
        for b, v in out["baselines"].items():
            if v and row["decode_tok_s_1"]:
                row[f"x_{b}"] = round(row["decode_tok_s_1"] / v, 2)
        out["servers"][spec] = row
    first = next(iter(out["servers"].values()))
    for row in out["servers"].values():
        row["tok_s_x_first"] = {c: round(v / first["tok_s"][c], 2) if first["tok_s"][c] else None
                                for c, v in row["tok_s"].items()}
    return out


def summary_table(s: dict) -> str:
    lines = ["summary (medians over rounds): batch-1 decode tok/s through the API, and output tok/s per clients level"]
    for b, v in s["baselines"].items():
        lines.append(f"  baseline {b}: batch-1 decode {v:.1f} tok/s" if v else f"  baseline {b}: not available")
    for spec, row in s["servers"].items():
        ratios = ", ".join(f"{row[k]:.2f}x {k[2:]}" for k in row if k.startswith("x_"))
        levels = ", ".join(f"{c} clients {v:.1f} tok/s ({row['tok_s_x_first'][c]:.2f}x first)"
                           for c, v in row["tok_s"].items() if v)
        d = row["decode_tok_s_1"]
        lines.append(f"  {spec}: batch-1 decode {d:.1f} tok/s" if d else f"  {spec}: batch-1 decode -")
        lines[-1] += (f" ({ratios})" if ratios else "") + f"; {levels}"
    return "\n".join(lines)
