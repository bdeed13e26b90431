"""`labkit bench prune [--only ...] [--json]`: what pruning costs in quality and buys in speed.

- `sparse24` (GPU): 2:4 semi-structured sparse matmuls (`torch.sparse.to_sparse_semi_structured`,
  cuSPARSELt; CUTLASS is tried too) against dense fp16 `F.linear` on Llama-2-7B layer shapes
  over 1 to 8192 tokens, then end to end on a Llama-2-7B-shaped model with random weights:
  prefill, and decode at batch 1 and 64. Both sides of every ratio run in the same process.
"""
from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
from typing import Callable

import torch
import torch.nn.functional as F

LLAMA2_7B_LINEARS = {"q/k/v/o_proj": (4096, 4096), "gate/up_proj": (11008, 4096), "down_proj": (4096, 11008)}
TOKENS = (1, 16, 64, 256, 1024, 4096, 8192)


def gpu_ms(fn: Callable[[], object], calls: int = 20, repeats: int = 5) -> float:
    """Median milliseconds per call of `fn`, from CUDA events around `calls` back-to-back calls."""
    fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return statistics.median(times)


def two_four(weight: torch.Tensor) -> torch.Tensor:
    """Magnitude 2:4 pruning (the pattern is what matters for speed, not which weights)."""
    from labkit.prune.masks import magnitude_scores, nm_mask

    return weight * nm_mask(magnitude_scores(weight), 2, 4)


@torch.no_grad()
def sparse24_layers(tokens=TOKENS) -> list[dict]:
    """Per Llama-2-7B linear shape and token count: dense and 2:4 sparse ms, and the ratio."""
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    rows = []
    for name, (out_f, in_f) in LLAMA2_7B_LINEARS.items():
        w = two_four(torch.randn(out_f, in_f, device="cuda", dtype=torch.float16) * 0.02)
        backends = {}
        for backend in ("cusparselt", "cutlass"):
            SparseSemiStructuredTensor._FORCE_CUTLASS = backend == "cutlass"
            try:
                backends[backend] = to_sparse_semi_structured(w)
            except Exception as e:  # a backend this GPU or build does not offer: say so in the table
                backends[backend] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
        SparseSemiStructuredTensor._FORCE_CUTLASS = False
        for t in tokens:
            x = torch.randn(t, in_f, device="cuda", dtype=torch.float16)
            dense = F.linear(x, w)
            row = {"layer": name, "shape": [out_f, in_f], "tokens": t, "dense_ms": gpu_ms(lambda: F.linear(x, w))}
            for backend, ws in backends.items():
                if isinstance(ws, str):
                    row[f"{backend}_error"] = ws
                    continue
                try:
                    err = float((F.linear(x, ws) - dense).abs().max() / dense.abs().max())
                    ms = gpu_ms(lambda: F.linear(x, ws))
                    row.update({f"{backend}_ms": ms, f"{backend}_speedup": row["dense_ms"] / ms,
                                f"{backend}_rel_err": err})
                except Exception as e:
                    row[f"{backend}_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
            rows.append(row)
    return rows


@torch.no_grad()
def sparse24_end_to_end(prefill_tokens: int = 2048, context: int = 512, batches=(1, 64)) -> list[dict]:
    """A Llama-2-7B-shaped model (random weights, fp16) pruned 2:4, dense weights against
    semi-structured ones: prefill tokens/s and decode tokens/s."""
    import copy

    from labkit.models.llama import Llama, rope_frequencies
    from labkit.prune.oneshot import layer_linears
    from labkit.prune.semistructured import to_semi_structured
    from labkit.profile.configs import preset
    from labkit.profile.speed import decode_speed, prefill_speed

    config = preset("Llama-2-7B")
    with torch.device("meta"):
        dense = Llama(config)
    dense = dense.to_empty(device="cuda").half()
    for p in dense.parameters():
        p.normal_(0, 0.02)
    dense.inv_freq = rope_frequencies(config).cuda()  # to_empty left the buffer uninitialized
    for layer in dense.model.layers:
        for lin in layer_linears(layer).values():
            lin.weight.copy_(two_four(lin.weight))
    sparse = to_semi_structured(copy.deepcopy(dense))
    rows = []
    for what, fn in [("prefill", lambda m: prefill_speed(m, tokens=prefill_tokens, repeats=3))] + \
            [(f"decode batch {b}", lambda m, b=b: decode_speed(m, context=context, steps=8, batch=b)) for b in batches]:
        d, s = fn(dense), fn(sparse)
        rows.append({"what": what, "dense_tok_s": d, "sparse24_tok_s": s, "speedup": s / d})
    return rows


def sparse24_table(result: dict) -> str:
    lines = [f"2:4 semi-structured vs dense fp16 on {result['device']} (torch {result['torch']})",
             f"{'layer':<14}{'tokens':>7}{'dense ms':>10}{'cuSPARSELt ms':>15}{'ratio':>7}  cutlass"]
    for r in result["layers"]:
        sp = f"{r['cusparselt_ms']:>15.4f}{r['cusparselt_speedup']:>7.2f}" if "cusparselt_ms" in r else \
            f"  {r.get('cusparselt_error', '')[:40]}"
        cut = f"{r['cutlass_ms']:.4f} ms ({r['cutlass_speedup']:.2f}x)" if "cutlass_ms" in r else \
            r.get("cutlass_error", "")[:60]
        lines.append(f"{r['layer']:<14}{r['tokens']:>7}{r['dense_ms']:>10.4f}{sp}  {cut}")
    for r in result.get("end_to_end", []):
        lines.append(f"Llama-2-7B shapes, {r['what']:<16} dense {r['dense_tok_s']:10.1f} tok/s, "
                     f"2:4 {r['sparse24_tok_s']:10.1f} tok/s ({r['speedup']:.2f}x)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import json

    from labkit.errors import UserError

    p = argparse.ArgumentParser(prog="labkit bench prune", description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=["sparse24"], default=["sparse24"], help="which parts to run")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    result = {"date": datetime.date.today().isoformat(), "machine": platform.machine(), "torch": torch.__version__}
    if "sparse24" in args.only:
        if not torch.cuda.is_available():
            raise UserError("--only sparse24 needs an NVIDIA GPU (2:4 sparse tensor cores)")
        result["device"] = torch.cuda.get_device_name()
        result["layers"] = sparse24_layers()
        print("layers done", file=sys.stderr, flush=True)
        result["end_to_end"] = sparse24_end_to_end()
    print(json.dumps(result) if args.json else sparse24_table(result))
    return 0
