"""`labkit bench engine --tp N`: the same static batches at tp=1 and tp=N, side by side.

For each batch size: output tokens/s, the decode step, the share of the time rank 0 spent
inside collectives (waiting for the other ranks included) and the scaling efficiency,
tok/s(N) / (N x tok/s(1)). The communication share is counted around each collective, so
only steps that run Python count: CPU steps and eager GPU steps, not CUDA graph replays
(on a GPU it is reported for the prefills only then, and marked so).
"""
from __future__ import annotations

from typing import Callable

import torch

from labkit.engine.workload import engine_static


def run_tp(args, result: dict, source: list[int], make_llm: Callable, rounds: int = 3) -> None:
    """Fill `result["tp"]`: a row per (tp, batch) of the first `--weights` format, the median
    of `rounds` runs that alternate between the two engines (both stay built, so a machine
    that is busy with something else slows both alike). On a CPU each engine runs with the
    threads it was built with (all cores for tp=1, its share for each rank of tp=N)."""
    def prompts_at(first: int, count: int) -> list[list[int]]:
        return [source[(first + i) * 37:(first + i) * 37 + args.input_len] for i in range(count)]

    weights, engines = args.weights[0], {}
    for tp in (1, args.tp):
        threads = torch.get_num_threads()
        engines[tp] = (make_llm(args, weights, max_batch=max(args.batch_sizes), tp=tp), threads)
    engines[args.tp] = (engines[args.tp][0], torch.get_num_threads())   # rank 0's share, set while starting
    rows, first = [], 0
    for b in args.batch_sizes:
        runs: dict[int, list[dict]] = {tp: [] for tp in engines}
        for r in range(rounds + 1):   # round 0 warms this shape up
            for tp in (sorted(engines) if r % 2 else sorted(engines, reverse=True)):
                llm, threads = engines[tp]
                torch.set_num_threads(threads)
                comm = llm.tp.comm if llm.tp is not None else None
                if comm is not None:
                    comm.reset()
                    comm.timing = r > 0
                row = engine_static(llm, b, prompts_at(first, b), args.output_len)
                first += b   # prompts of its own: a timed run prefills in full
                if comm is not None:
                    comm.timing = False
                    row["comm_share"] = round(comm.seconds / row["total_s"], 3)
                    row["comm_graphs_uncounted"] = bool(llm.engine.runner.graphs)
                if r > 0:
                    runs[tp].append(row)
        base = _median(runs[1])["output_tok_s"]
        for tp, measured in runs.items():
            row = {"server": f"labkit {weights} tp={tp}", "tp": tp, "rounds": rounds, **_median(measured)}
            row["speedup"] = round(row["output_tok_s"] / base, 3)
            row["efficiency"] = round(row["speedup"] / tp, 3)
            rows.append(row)
    for llm, _ in engines.values():
        llm.close()
    result["tp"] = rows


def _median(rows: list[dict]) -> dict:
    return sorted(rows, key=lambda r: r["output_tok_s"])[len(rows) // 2]


def format_tp(rows: list[dict]) -> list[str]:
    lines = ["\ntensor parallel: batch, decode ms/step, output tok/s, comm share, speedup, efficiency vs tp=1"]
    for r in rows:
        share = f"{100 * r['comm_share']:.0f}%" if "comm_share" in r else "-"
        if r.get("comm_graphs_uncounted"):
            share += " (prefills only: graphs)"
        lines.append(f"  {r['server']:<22} B={r['batch']:<3} {r['decode_ms_per_step']:>8} {r['output_tok_s']:>9} "
                     f"{share:>6} {r['speedup']:>6}x {100 * r['efficiency']:>5.0f}%")
    return lines
