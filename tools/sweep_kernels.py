"""Kernel variants on a few shapes: how the defaults of each kernel file's `plan()` were chosen.

    python tools/sweep_kernels.py [--json]     (on a CUDA GPU)

A tuning tool, not part of `labkit bench kernels`: it times each variant (block shape,
launch bounds, partition, steps per tile) with the bench's timing (`measure.time_us`: CUDA
graph replays, inputs rotated past the L2 cache) and prints one line per variant. The
figures that decided a default are in docs/benchmarks.md (GEMV sweep, attention sections).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

import torch

from labkit.kernels import kv_quant, measure, paged_attention, w4a16_gemm, w4a16_gemv
from labkit.kernels.packing import random_int4_layer

GROUP = 128
LINEAR_SHAPES = ((4096, 4096), (32000, 4096))            # (N, K): a square layer and the output head
#: w4a16_gemv tiles: (column quads per block, runs per block along K, rounds of 8 rows per run,
#: register stages, min blocks per SM), see `w4a16_gemv.plan`
GEMV_TILES = ((4, 32, 4, 3, 2), (8, 32, 4, 3, 1), (8, 32, 2, 2, 1), (8, 16, 8, 3, 1))
#: w4a16_gemm: ((words of 8 columns per block, slices of K per block, splits along K), min blocks per SM)
GEMM_VARIANTS = (((16, 8, 8), 1), ((16, 8, 8), 2), ((16, 8, 8), 3), ((16, 8, 4), 3), ((16, 8, 16), 3),
                 ((8, 16, 8), 3))
GEMM_ROWS = (2, 8)
ATTENTION_SHAPES = ((32, 4096), (1, 32768))               # (batch, context)
KV_HEADS = (8, 32)                                        # GQA and MHA under 32 query heads
#: paged attention: (steps per tile, min blocks per SM; 0 = no launch bound)
FP16_ATTENTION = ((4, 0), (2, 0), (4, 3), (8, 0))
QUANT_ATTENTION = ((8, 0), (4, 0), (8, 3))
WARPS = 4


def sweep() -> list[dict]:
    """One row per (kernel, shape, variant): median microseconds per call."""
    rows = []

    def timed(kernel: str, shape: str, variant: dict, step: Callable[[int], None], sets: int) -> None:
        rows.append({"kernel": kernel, "shape": shape, "variant": variant, "us": measure.time_us(step, sets)})
        measure.log(f"sweep {kernel} {shape} {variant}: {rows[-1]['us']:.1f} us")

    for n, k in LINEAR_SHAPES:
        layers = [random_int4_layer(n, k, GROUP, "cuda") for _ in range(measure.sets_for(k * n // 2))]
        x = torch.randn(max(GEMM_ROWS), k, device="cuda").half()
        for tile in GEMV_TILES:
            timed("w4a16_gemv", f"N={n} K={k}", {"tile": tile},
                  lambda i: w4a16_gemv.w4a16_gemv(x[:1], *layers[i], GROUP, tile=tile), len(layers))
        if n == k:
            for m in GEMM_ROWS:
                for tile, min_blocks in GEMM_VARIANTS:
                    timed("w4a16_gemm", f"M={m} N={n} K={k}", {"tile": tile, "min_blocks": min_blocks},
                          lambda i: w4a16_gemm.w4a16_gemm(x[:m], *layers[i], GROUP, tile=tile, min_blocks=min_blocks),
                          len(layers))
        del layers
        measure.free_memory()
    for kv_heads in KV_HEADS:
        for batch, context in ATTENTION_SHAPES:
            k, v, tables, lens = paged_attention.bench_cache(batch, context, kv_heads)
            q = torch.randn(batch, 32, 128, device="cuda", dtype=torch.float16)
            shape = f"B={batch} ctx={context} H=32/{kv_heads}"
            for partition in ((None, 256) if batch == 1 else (None,)):
                for steps, min_blocks in FP16_ATTENTION:
                    timed("paged_attention", shape, {"partition": partition, "steps": steps, "min_blocks": min_blocks},
                          lambda i: paged_attention.launch_attention(
                              q, k, v, tables, lens, scale=None, max_context_len=context, out=None,
                              partition=partition, warps=WARPS, bits=16, steps=steps, min_blocks=min_blocks), 1)
            for bits in (8, 4):
                kq, vq, k_scale_zero, v_scale_zero = kv_quant.quantized_cache(k, v, bits)
                for steps, min_blocks in QUANT_ATTENTION:
                    timed(f"paged_attention_int{bits}", shape, {"steps": steps, "min_blocks": min_blocks},
                          lambda i: paged_attention.launch_attention(
                              q, kq, vq, tables, lens, scale=None, max_context_len=context, out=None,
                              partition=None, warps=WARPS, bits=bits, k_scale_zero=k_scale_zero,
                              v_scale_zero=v_scale_zero, steps=steps, min_blocks=min_blocks), 1)
                del kq, vq, k_scale_zero, v_scale_zero
            del k, v
            measure.free_memory()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/sweep_kernels.py", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("tools/sweep_kernels.py needs a CUDA GPU", file=sys.stderr)
        return 2
    result = {"device": torch.cuda.get_device_name(), "rows": sweep()}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"device: {result['device']}")
        for r in result["rows"]:
            print(f"{r['kernel']:<24}{r['shape']:<26}{json.dumps(r['variant']):<52}{r['us']:>9.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
