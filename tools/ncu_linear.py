"""Where a W4A16 linear kernel's time goes: Nsight Compute on one launch per case, one table.

    python tools/ncu_linear.py --out DIR [--cases tc_async:gate_up:32,tc_async:qkv:2,tc:gate_up:16,...]

Each case is KERNEL:LAYER:ROWS (KERNEL: tc_async, tc, gemv, gemv_fused (w4a16_gemv with the
fusion the batch-1 decode step gives that layer) or f16 (the fp16 GEMV on the same shape); LAYER:
a Llama-2-7B layer shape, group 128; optional :TILE with the tile's numbers joined by '-', e.g.
tc_async:gate_up:32:1-4-1-3-3-2). For each, `ncu --clock-control none` (the device's clocks
left alone) profiles the fourth launch in a child process of this script (`--launch`), with
the sections that say whether a kernel waits on bytes or issues instructions: speed of light,
scheduler and warp state statistics, instruction counts, occupancy, memory workload. The
report goes to DIR/ncu_CASE.txt, the figures below to DIR/ncu_linear.json and stdout.

With --stalls, where the warps wait: the average stall cycles per issued instruction by
reason (`smsp__average_warps_issue_stalled_*`), and ncu's per-instruction sampling of the
machine code (the source page as CSV, DIR/ncu_CASE_sass.csv), summed by opcode: which
instructions the warps sit at, and why.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

KERNEL_NAME = {"tc_async": "w4a16_tc_async", "tc": "w4a16_tc", "gemv": "gemv", "gemv_fused": "gemv", "f16": "gemv"}
SECTIONS = ("SpeedOfLight", "WarpStateStats", "SchedulerStats", "InstructionStats", "Occupancy", "LaunchStats",
            "MemoryWorkloadAnalysis", "SourceCounters")
METRICS = ("Duration", "DRAM Throughput", "L2 Cache Throughput", "Compute (SM) Throughput", "Issued Warp Per Scheduler",
           "Active Warps Per Scheduler", "Eligible Warps Per Scheduler", "Warp Cycles Per Issued Instruction",
           "Executed Instructions", "Registers Per Thread", "Achieved Occupancy", "Waves Per SM", "Grid Size")
STALLS = r"regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio"
DEFAULT_CASES = "tc_async:gate_up:32,tc_async:qkv:2,tc_async:o:32,tc:gate_up:16"


def launch(kernel: str, layer: str, m: int, tile: tuple[int, ...] | None) -> None:
    """Four launches of `kernel` on `layer` with M rows (the profiler takes the fourth: the first
    ones compile and warm up)."""
    import torch

    from gpu_decode_check import FUSED, LAYER   # (this folder: the decode check's layer shapes and fusions)
    from labkit.kernels import f16_gemv, w4a16_gemv, w4a16_tc, w4a16_tc_async
    from labkit.kernels.packing import random_int4_layer

    n, k = LAYER[layer]
    x = torch.randn(m, k, device="cuda").half()
    options = {"tile": tile} if tile else {}
    if kernel in ("gemv_fused", "f16"):
        prologue, residual = FUSED[layer]
        x = torch.randn(2 * k if prologue == "silu_mul" else k, device="cuda").half()
        options.update(prologue=prologue, residual=torch.randn(n, device="cuda").half() if residual else None,
                       norm=torch.rand(k, device="cuda").half() + 0.5 if prologue == "rmsnorm" else None)
    if kernel == "f16":
        weight = torch.randn(n, k, device="cuda").half()
        for _ in range(4):
            f16_gemv.f16_gemv(x, weight, **options)
    else:
        weights = random_int4_layer(n, k, 128, "cuda")
        run = {"tc_async": w4a16_tc_async.w4a16_tc_async, "tc": w4a16_tc.w4a16_tc}.get(kernel, w4a16_gemv.w4a16_gemv)
        for _ in range(4):
            run(x, *weights, 128, **options)
    torch.cuda.synchronize()


def metrics(report: str) -> dict[str, float]:
    """The METRICS (and the shared-memory excess ncu reports) found in an ncu text report."""
    found = {}
    for name in METRICS:
        match = re.search(rf"^\s+{re.escape(name)}\s+(\S+\s+)?([\d,.]+)\s*$", report, re.M)
        if match:
            unit = (match.group(1) or "").strip()
            found[f"{name} ({unit})" if unit else name] = float(match.group(2).replace(",", ""))
    excess = re.search(r"uncoalesced shared accesses resulting in a total of (\d+) excessive wavefronts \((\d+)%", report)
    if excess:
        found["shared excessive wavefronts (%)"] = float(excess.group(2))
    return found


def stall_reasons(report: str) -> dict[str, float]:
    """Stall cycles per issued instruction, by reason, from the report's command-line metrics."""
    found = re.findall(r"^\s+smsp__average_warps_issue_stalled_(\w+?)_per_issue_active\.ratio\s+(?:\S+\s+)?([\d,.]+)\s*$",
                       report, re.M)
    values = {reason: float(v.replace(",", "")) for reason, v in found}
    return {k: v for k, v in sorted(values.items(), key=lambda kv: -kv[1]) if v >= 0.01}


def stalls_by_opcode(sass_csv: str) -> dict[str, int]:
    """Stall samples per opcode from the source page's CSV (columns: Source, ..., Warp Stall Sampling)."""
    import csv
    import io

    from sass_loop import opcode   # (this folder: `@P0 LDS.U.32 ...` -> `LDS`)

    rows = list(csv.reader(io.StringIO(sass_csv[max(0, sass_csv.find('"Address"')):])))   # (after the kernel's name)
    if not rows:
        return {}
    head = rows[0]
    source = next((i for i, h in enumerate(head) if h.strip() == "Source"), None)
    samples = next((i for i, h in enumerate(head) if h.startswith("Warp Stall Sampling (All")), None)
    if source is None or samples is None:
        return {}
    total: dict[str, int] = {}
    for row in rows[1:]:
        if len(row) > max(source, samples) and row[samples].replace(",", "").isdigit():
            op = opcode(row[source].strip())
            total[op] = total.get(op, 0) + int(row[samples].replace(",", ""))
    return dict(sorted(total.items(), key=lambda kv: -kv[1]))


def profile(case: str, out_dir: Path, stalls: bool = False) -> dict:
    kernel, layer, m, *tile = case.split(":")
    name = case.replace(":", "_")
    sections = [a for s in SECTIONS for a in ("--section", s)]
    extra = ["--metrics", STALLS, "--export", str(out_dir / f"ncu_{name}"), "--force-overwrite"] if stalls else []
    cmd = ["ncu", "--clock-control", "none", "--kernel-name", f"regex:{KERNEL_NAME[kernel]}", "--launch-skip", "3",
           "--launch-count", "1", *sections, *extra, sys.executable, __file__, "--launch", kernel, layer, m, *tile]
    done = subprocess.run(cmd, capture_output=True, text=True)
    report = done.stdout + done.stderr
    row = {"case": case, "ok": done.returncode == 0 and "==PROF== Profiling" in report}
    if stalls and row["ok"]:   # (an exported profile prints nothing: read it back, then its machine code)
        rep = str(out_dir / f"ncu_{name}.ncu-rep")
        report += subprocess.run(["ncu", "--import", rep, "--page", "details"], capture_output=True, text=True).stdout
        sass = subprocess.run(["ncu", "--import", rep, "--page", "source", "--csv", "--print-source", "sass"],
                              capture_output=True, text=True)
        (out_dir / f"ncu_{name}_sass.csv").write_text(sass.stdout + sass.stderr)
        row.update(stalls=stall_reasons(report), stalls_by_opcode=stalls_by_opcode(sass.stdout))
    (out_dir / f"ncu_{name}.txt").write_text(report)
    return {**row, **metrics(report)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out")
    p.add_argument("--cases", default=DEFAULT_CASES)
    p.add_argument("--stalls", action="store_true", help="also the stall reasons, and the stalls per instruction")
    p.add_argument("--launch", nargs="+", help=argparse.SUPPRESS)   # the child process ncu profiles
    args = p.parse_args(argv)
    if args.launch:
        kernel, layer, m, *tile = args.launch
        launch(kernel, layer, int(m), tuple(int(v) for v in tile[0].split("-")) if tile else None)
        return 0
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [profile(case, out_dir, args.stalls) for case in args.cases.split(",")]
    (out_dir / "ncu_linear.json").write_text(json.dumps(rows, indent=1))
    for row in rows:
        print(f"{row['case']:<36} " + ("  ".join(f"{k} {v:g}" for k, v in row.items() if isinstance(v, float))
                                         if row["ok"] else "not profiled (see its report)"))
        for key in ("stalls", "stalls_by_opcode"):
            if row.get(key):
                print(f"    {key}: " + ", ".join(f"{k} {v:g}" for k, v in list(row[key].items())[:12]))
    return 0 if all(row["ok"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
