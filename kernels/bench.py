"""`labkit bench kernels [--json] [--quick] [--only NAME ...]`: every kernel on real model shapes.

For each kernel and shape: median time (CUDA events over CUDA-graph replays, inputs rotated
past the L2 cache), bytes moved, achieved GB/s, the fraction of the device-to-device copy
bandwidth measured at the start of the same run, and the ratio to the torch baseline timed
in the same run (fp16 torch.matmul for linear layers, on [N, K] weights as nn.Linear keeps them
for the fp16 GEMV; scaled_dot_product_attention over the cache gathered into contiguous
tensors for attention). It also checks every kernel on fresh
random inputs first, checks that the W4A16 dispatcher is never more than 10% slower than the
best of its three options, and proves that a launch sequence replays in a CUDA graph.

Shapes: Llama-2-7B layers (N, K) = (4096, 4096), (11008, 4096), (4096, 11008), (12288, 4096),
(32000, 4096) with group size 128; attention with 32 query heads over 32 (MHA) or 8 (GQA)
KV heads, head_dim 128, block size 16, B in {1, 8, 32} and context in {512, 4096, 32768}.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from typing import Callable

import torch

from labkit.kernels import measure

LINEAR_SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (12288, 4096), (32000, 4096)]
ATTENTION = [(b, c) for b in (1, 8, 32) for c in (512, 4096, 32768)]
DISPATCH_ROWS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)


def _finish(row: dict, copy_gbps: float) -> dict:
    """Add GB/s, fraction of copy bandwidth and the speedup over the baseline to a bench row."""
    row["gbps"] = row["bytes"] / (row["us"] * 1e-6) / 1e9
    row["copy_frac"] = row["gbps"] / copy_gbps
    base = row.get("torch_us") or row.get("sdpa_us")
    if base:
        row["speedup"] = base / row["us"]
    return row


def correctness() -> list[dict]:
    """Every kernel's check() on fresh random inputs, on this GPU (real compiled kernels)."""
    from labkit.kernels import (dequant, f16_gemv, kv_quant, paged_attention, w4a16_gemm, w4a16_gemv, w4a16_tc,
                                w4a16_tc_async, w8a16_gemv)

    checks: list[tuple[str, Callable[[], object]]] = [
        ("w4a16_gemv 4096x4096", lambda: w4a16_gemv.check(4096, 4096, 128, tile=None)),
        ("w4a16_gemv 11008x4096", lambda: w4a16_gemv.check(11008, 4096, 128, tile=None)),
        ("w4a16_gemv odd", lambda: w4a16_gemv.check(96, 192, 64)),
        ("w4a16_gemm M=8", lambda: w4a16_gemm.check(8, 4096, 4096, 128, tile=None)),
        ("w4a16_gemm M=3 odd", lambda: w4a16_gemm.check(3, 40, 96, 32)),
        ("w4a16_tc M=1", lambda: w4a16_tc.check(1, 11008, 4096, 128, tile=None)),
        ("w4a16_tc M=8", lambda: w4a16_tc.check(8, 4096, 11008, 128, tile=None)),
        ("w4a16_tc M=3 odd", lambda: w4a16_tc.check(3, 136, 160, 32)),
        ("w4a16_tc_async M=32", lambda: w4a16_tc_async.check(32, 4096, 11008, 128, tile=None)),
        ("dequant", lambda: dequant.check(4096, 1024, 128)),
        ("w8a16_gemv", lambda: w8a16_gemv.check(4096, 4096, 4096)),
        ("f16_gemv 4096x11008", lambda: f16_gemv.check(4096, 11008, tile=None)),
        ("f16_gemv 12288x4096 rmsnorm", lambda: f16_gemv.check(12288, 4096, tile=None, prologue="rmsnorm")),
        ("f16_gemv odd", lambda: f16_gemv.check()),
        ("paged_attention GQA split", lambda: paged_attention.check((1, 700, 4099), 32, 8, 128, 16, None, 4)),
        ("paged_attention MHA", lambda: paged_attention.check((17, 300), 32, 32, 128, 16, None, 4)),
        ("paged_attention D=64 bs=32", lambda: paged_attention.check((5, 90), 9, 3, 64, 32, 64, 4)),
        ("write_kv int8", lambda: kv_quant.check_write(8, 64, 8, 128)),
        ("write_kv int4", lambda: kv_quant.check_write(4, 64, 8, 128)),
        ("attention int8", lambda: kv_quant.check(8, (3, 2000), 32, 8, 128, 16, None, 4)),
        ("attention int4", lambda: kv_quant.check(4, (3, 2000), 32, 8, 128, 16, None, 4)),
    ]
    rows = []
    for name, fn in checks:
        try:
            err = fn()
            rows.append({"check": name, "ok": True, "rel_error": err})
        except AssertionError as e:
            rows.append({"check": name, "ok": False, "message": str(e)})
        measure.log(f"check {name}: {rows[-1]}")
    return rows


def linear_rows(copy_gbps: float, quick: bool) -> list[dict]:
    from labkit.kernels import f16_gemv, w4a16_gemm, w4a16_gemv, w4a16_tc, w8a16_gemv

    rows = []
    for n, k in (LINEAR_SHAPES[:2] if quick else LINEAR_SHAPES):
        rows.append(_finish(f16_gemv.bench(n, k), copy_gbps))
        rows.append(_finish(w4a16_gemv.bench(n, k, 128), copy_gbps))
        for m in (2, 4, 8):
            rows.append(_finish(w4a16_gemm.bench(m, n, k, 128), copy_gbps))
        for m in (1, 2, 4, 8):
            rows.append(_finish(w4a16_tc.bench(m, n, k, 128), copy_gbps))
        rows.append(_finish(w8a16_gemv.bench(n, k), copy_gbps))
        measure.log(f"linear {n}x{k}: " + ", ".join(f"{r['kernel']} {r['us']:.1f} us" for r in rows[-10:]))
        measure.free_memory()
    return rows


def dispatch_rows(quick: bool) -> list[dict]:
    """For each M: time every option and the dispatcher's choice; report the slowdown vs best."""
    from labkit.kernels import dispatch
    from labkit.kernels.packing import random_int4_layer

    rows = []
    for n, k in (LINEAR_SHAPES[:1] if quick else LINEAR_SHAPES[:4]):
        layers = [random_int4_layer(n, k, 128, "cuda") for _ in range(measure.sets_for(k * n // 2))]
        for m in DISPATCH_ROWS:
            x = torch.randn(m, k, device="cuda").half()
            times = {}
            for kernel in ("gemv", "gemm", "tc", "tc_async", "dequant_matmul"):
                if (kernel == "gemv") != (m == 1) or (kernel.startswith("tc") and m > dispatch.TC_UP_TO):
                    continue
                times[kernel] = measure.time_us(
                    lambda i: dispatch.w4a16_linear(x, *layers[i], 128, kernel=kernel), len(layers))
            choice = dispatch.choose(m, n, k, 128)
            best = min(times, key=times.get)
            rows.append({"shape": f"N={n} K={k}", "m": m, "times_us": times, "choice": choice, "best": best,
                         "slowdown": times[choice] / times[best]})
            measure.log(f"dispatch {n}x{k} M={m}: {times} choice={choice}")
        del layers
        measure.free_memory()
    return rows


def attention_rows(copy_gbps: float, quick: bool) -> list[dict]:
    from labkit.kernels import kv_quant, paged_attention

    rows = []
    for kv_heads in (32, 8):
        for batch, context in ([(32, 4096)] if quick else ATTENTION):
            rows.append(_finish(paged_attention.bench(batch, context, 32, kv_heads), copy_gbps))
            measure.log(f"attention B={batch} ctx={context} kv={kv_heads}: {rows[-1]['us']:.1f} us")
            measure.free_memory()
        for batch, context in ((32, 4096), (1, 32768)):
            fp16 = next(r for r in rows if r["kernel"] == "paged_attention"
                        and r["shape"].startswith(f"B={batch} ctx={context} H=32/{kv_heads}"))
            for bits in (8, 4):
                row = _finish(kv_quant.bench(batch, context, bits, 32, kv_heads), copy_gbps)
                row["speedup_vs_fp16"] = fp16["us"] / row["us"]
                rows.append(row)
                measure.log(f"attention int{bits} B={batch} ctx={context} kv={kv_heads}: {row['us']:.1f} us")
                measure.free_memory()
    return rows


def compiler_report() -> list[dict]:
    """Registers, shared and local memory per thread of the default kernels (as compiled here),
    and the blocks per SM the register file allows: what limits occupancy."""
    from labkit.kernels import dequant, f16_gemv, paged_attention, w4a16_gemm, w4a16_gemv, w8a16_gemv

    gemv_tile, gemm_tile = w4a16_gemv.plan(4096, 4096, 128), w4a16_gemm.plan(8, 4096, 4096)[:2]
    f16_tile = f16_gemv.plan(4096, 4096)
    kernels = {  # the same factory arguments as the launchers use, so these are the compiled kernels
        "f16_gemv": (f16_gemv.make_kernel(*f16_tile, "none", False), 32 * f16_tile[2]),
        "w4a16_gemv": (w4a16_gemv.make_kernel(*gemv_tile, "none", False), gemv_tile[0] * gemv_tile[1]),
        "w4a16_gemm M=8": (w4a16_gemm.make_kernel(8, *gemm_tile, 1), gemm_tile[0] * gemm_tile[1]),
        "dequant": (dequant.dequant, 256),
        "w8a16_gemv": (w8a16_gemv.gemv8, 32 * w8a16_gemv.WARPS),
        "paged_attention MHA": (paged_attention.make_kernel(128, 16, 1, 16, 4, 4, 0), 128),
        "paged_attention GQA": (paged_attention.make_kernel(128, 16, 4, 16, 4, 4, 0), 128),
        "paged_attention int8 GQA": (paged_attention.make_kernel(128, 16, 4, 8, 4, 8, 0), 128),
    }
    rows = []
    for name, (kernel, threads) in kernels.items():
        shared, local = kernel.get_shared_mem_per_block(), kernel.get_local_mem_per_thread()
        for sig, regs in kernel.get_regs_per_thread().items():
            rows.append({"kernel": name, "registers": regs, "threads": threads, "shared_bytes": shared[sig],
                         "local_bytes": local[sig],
                         "blocks_per_sm_by_registers": 65536 // (-(-regs // 8) * 8 * threads)})
    return rows


def table(result: dict) -> str:
    """The bench as plain text: one line per kernel and shape."""
    lines = [f"device: {result['device']}  copy bandwidth: {result['copy_gbps']:.0f} GB/s  ({result['date']})"]
    lines.append(f"{'kernel':<24}{'shape':<50}{'us':>9}{'GB/s':>8}{'copy%':>7}{'baseline us':>12}{'x base':>8}")
    for r in result["kernels"]:
        base = r.get("torch_us") or r.get("sdpa_us")
        extra = "".join(f" {key}={r[key]}" for key in ("tile", "partition", "steps") if r.get(key) is not None)
        lines.append(f"{r['kernel']:<24}{r['shape'] + extra:<50}"
                     f"{r['us']:>9.1f}{r['gbps']:>8.0f}{100 * r['copy_frac']:>6.0f}%"
                     f"{base if base is not None else float('nan'):>12.1f}{r.get('speedup', float('nan')):>8.2f}"
                     + (f"  {r['speedup_vs_fp16']:.2f}x fp16 KV" if "speedup_vs_fp16" in r else ""))
    for r in result.get("dispatch", []):
        lines.append(f"dispatch {r['shape']} M={r['m']:<3} choice={r['choice']:<15} best={r['best']:<15} "
                     f"slowdown={r['slowdown']:.2f}  {json.dumps({k: round(v, 1) for k, v in r['times_us'].items()})}")
    for r in result.get("checks", []):
        lines.append(f"check {r['check']:<28} {'ok' if r['ok'] else 'FAILED ' + r['message']}")
    if "graph" in result:
        lines.append(f"CUDA graph: {result['graph']}")
    for r in result.get("compiler", []):
        lines.append(f"compiler {r['kernel']:<26} {r['registers']} registers x {r['threads']} threads, "
                     f"{r['shared_bytes']} B shared, {r['local_bytes']} B local: "
                     f"{r['blocks_per_sm_by_registers']} blocks/SM by registers")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="labkit bench kernels", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--quick", action="store_true", help="a few shapes only")
    parser.add_argument("--only", nargs="*",
                        choices=["checks", "linear", "steps", "dispatch", "attention", "graph"],
                        help="run only these parts (kernel variants: tools/sweep_kernels.py)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("labkit bench kernels needs a CUDA GPU (the simulator is for correctness, not speed)", file=sys.stderr)
        return 2
    parts = set(args.only or ["checks", "linear", "steps", "dispatch", "attention", "graph"])
    start = time.time()
    result: dict = {"device": torch.cuda.get_device_name(), "date": datetime.date.today().isoformat(),
                    "command": "labkit bench kernels " + " ".join(argv if argv is not None else sys.argv[1:]),
                    "copy_gbps": measure.copy_bandwidth(), "kernels": []}
    measure.log(f"copy bandwidth {result['copy_gbps']:.0f} GB/s")
    if "checks" in parts:
        result["checks"] = correctness()
    if "graph" in parts:
        from labkit.kernels.graph_capture import graph_capture_check

        result["graph"] = graph_capture_check()
    if "linear" in parts:
        result["kernels"] += linear_rows(result["copy_gbps"], args.quick)
    if "steps" in parts:
        from labkit.kernels import attention_steps, gemv_steps

        for steps in (gemv_steps, attention_steps):
            result["kernels"] += [_finish(row, result["copy_gbps"]) for row in steps.bench()]
            measure.free_memory()
    if "dispatch" in parts:
        result["dispatch"] = dispatch_rows(args.quick)
    if "attention" in parts:
        result["kernels"] += attention_rows(result["copy_gbps"], args.quick)
    try:
        result["compiler"] = compiler_report()
    except Exception as e:  # a kernel not compiled in this run has no report
        measure.log(f"compiler report unavailable: {e}")
    result["seconds"] = round(time.time() - start, 1)
    print(json.dumps(result) if args.json else table(result))
    ok = all(c["ok"] for c in result.get("checks", [])) and result.get("graph", {}).get("graph_replay_matches_eager", True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
