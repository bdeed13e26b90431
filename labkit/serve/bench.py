"""`labkit bench serve [MODEL]`: many concurrent streaming clients against the API server.

By default it starts the server in this process on a free loopback port (the engine and
the clients then share the machine, as they would on a laptop); `--url` measures a server
that is already running instead. For each concurrency level it sends `--requests` chat
requests (greedy, `--max-tokens` each) with that many in flight, and reports time to first
token, request latency (median and 95th percentile) and output tokens per second. Every
level has a deadline, so a stuck server ends the run instead of hanging it.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import sys

from labkit.clitools import add_json_argument, add_model_argument, emit
from labkit.errors import UserError
from labkit.serve.client import LoadReport, chat_body, run_load

QUESTIONS = [
    "What is the capital of France?", "Name three primary colors.", "Why is the sky blue?",
    "Give me a synonym for happy.", "What does a CPU do?", "Write a haiku about rain.",
    "How many legs does a spider have?", "What is 12 times 12?", "Explain gravity in one sentence.",
    "Suggest a name for a cat.", "What is the boiling point of water?", "Translate 'thank you' into Spanish.",
    "What is photosynthesis?", "List two programming languages.", "What is the largest ocean?",
    "Who wrote Romeo and Juliet?",
]


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
    add_json_argument(p)
    add_engine_arguments(p)


def bodies(model: str, n: int, max_tokens: int) -> list[dict]:
    """`n` greedy chat requests cycling through QUESTIONS (they share the template's system
    prompt, so the prefix cache has something to find, as in real chat traffic)."""
    return [chat_body(model, [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}], max_tokens) for i in range(n)]


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
        report, _ = asyncio.run(run_load(url, bodies(model, requests, max_tokens), c, deadline_s=deadline, headers=headers))
        reports.append(report)
    return reports


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
    if min(args.concurrency) < 1 or args.requests < 1 or args.max_tokens < 1:
        raise UserError("--concurrency, --requests and --max-tokens must be >= 1")
    name = args.model_name or args.model
    result = {"suite": "serve", "date": datetime.date.today().isoformat(), "model": name,
              "max_tokens": args.max_tokens, "command": "labkit bench serve " + " ".join(argv or sys.argv[3:])}
    if args.url:
        reports = measure(args.url, name, args.concurrency, args.requests, args.max_tokens, args.deadline, args.api_key)
        result.update(device="remote server", url=args.url)
    else:
        from labkit.serve.api_server import ServerThread, create_app
        from labkit.serve.engine_args import build_engine, engine_kwargs

        llm = build_engine(args.model, **engine_kwargs(args))
        with ServerThread(create_app(llm, name)) as server:
            reports = measure(server.url, name, args.concurrency, args.requests, args.max_tokens, args.deadline)
        stats = llm.stats()
        result.update(device=device_name(args.device), backend=args.backend, engine_stats_after=stats,
                      max_batch_size=args.max_batch_size)
    result["levels"] = [r.to_dict() for r in reports]
    header = (f"labkit bench serve · {name} · {result['device']} · {args.requests} requests per level, "
              f"max_tokens {args.max_tokens}, greedy")
    text = table(reports, header)
    if "engine_stats_after" in result:
        s = result["engine_stats_after"]
        text += f"\nKV blocks after the run: {s['blocks_used']} used of {s['blocks_total']}; prefix-cache hits {s['prefix_cache_hit_tokens']} tokens"
    emit(result, args.json, text)
    return 0 if all(r.failed == 0 for r in reports) else 1
