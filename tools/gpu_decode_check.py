"""Decode near the memory roofline: one GPU run that checks, times and writes the tables.

    python tools/gpu_decode_check.py --out DIR [--tokenizer DIR] [--parts checks,kernels,engine,rows,tc,bench,fused,rope,rope_engine,load,f16,f16_engine,prefill,overlap_tests,overlap,int4_scaling,int4_sweep,gemv_tail,gemv_plan,gemv_ends]
    [--batches 1,4,16]

- checks: the overlapped (programmatic dependent) launches give the bits of ordinary ones, on
  real layer shapes, and an engine's graph replays with overlap give the eager tokens without.
- kernels: each W4A16 GEMV of a Llama-2-7B layer back to back, and one layer's chain (norm,
  qkv, o, norm, gate/up, SiLU * up, down), with overlapped launches off and on.
- engine: Llama-2-7B shapes (random weights), compiled, CUDA graphs; ms per decode step at
  batch 1-32 for fp16 and W4A16 (overlap off, the default), off and on alternately at batch
  1 and 8 (the graphs re-captured in the same process), and the batch-1 step's kernels per
  step and gaps.
- rows: one layer's linear time for 1-32 rows, W4A16 (the dispatcher's kernel; both
  tensor-core kernels, w4a16_tc_async in each of its layouts and slabs per warp; the CUDA-core GEMM up to 8
  rows) against fp16.
- tc: the cp.async tensor-core kernel (w4a16_tc_async) against float64 on every layer shape
  at 2, 13, 16 and 32 rows, and its tests (tests/kernels: the cp.async primitives, the kernel
  on small shapes) on the GPU.
- bench: `labkit bench engine --shape llama-2-7b --weights fp16,int4 --compile` (static,
  batch 1-32) in this process: both compiled engines in one process.
- fused: the fused GEMVs of the batch-1 decode step (labkit.engine.fuse): checks on the
  layer shapes, the GPU-only tests of the fused path, each GEMV and a layer's four plain
  against fused (overlap off / on), and compiled batch-1 engines side by side (fp16, int4,
  int4 fused: ms per step in alternating rounds, kernels per step, greedy tokens of int4
  fused against int4); then int4 and int4 fused with Inductor's programmatic dependent
  launch (`torch._inductor.config.triton.enable_pdl`), overlap off / on.

- rope: decode attention with the rotary embedding and the K/V write inside (NewTokens):
  checks on the 7B heads (fp16, int8, int4 caches), the GPU-only attention and engine tests,
  the kernel against rotary + write_kv + attention, and the dequantization kernel's bandwidth.
- rope_engine: compiled batch-1 engines, fp16 and int4, with the rotary inside attention off
  and on (ms per step in alternating rounds, kernels per step).
- load: fp16 and int4 engines side by side: the first token, ms per step at batch 1-32, and
  the chat workload of `labkit bench engine --mode dynamic` (--requests).
- f16: the fp16 GEMV (labkit.kernels.f16_gemv): checks on the 7B shapes (plain and each layer's
  fusion, ordinary and overlapped launches), its GPU tests, every tile of F16_TILES against
  cuBLAS on each shape, and each layer's fused GEMV over F16_FUSED_TILES.
- f16_engine: the GPU tests of the fused decode layers (fp16 and int4), then compiled batch-1
  engines side by side: fp16 (cuBLAS), fp16 fused (the fp16 GEMVs), int4 fused.
- prefill: the first token of a 128-token prompt with the fused layers off and on (fp16, int4).
- overlap_tests: the GPU-only tests of overlapped launches (GEMVs, attention, graphs, fused layers).
- overlap: a layer's four fused GEMVs (int4, fp16) with overlap off and on, then compiled fp16
  fused and int4 fused engines with their graphs captured with overlap off and on (every
  kernel of the batch-1 decode layer takes part: the GEMVs and attention): ms per step at
  --batches (1, 4, 16).
- int4_scaling: the batch-1 int4 GEMV's time against its bytes (N = 4096, K = 1,024-32,768; the
  fp16 GEMV alongside): a fixed cost per launch and the bandwidth beyond it.
- int4_sweep: each fused int4 GEMV of the decode step over INT4_FUSED_TILES (threads of 4-, 8-
  and 16-byte loads).
- gemv_tail: each fused int4 GEMV of the decode step as built and with one piece of its end left
  out (the split-K tail, the RMSNorm's sum of squares): timing only; then checks of the kernels
  as built on 25 fresh inputs a shape.
- gemv_plan: the GPU-only tests of the fused decode layers, then compiled batch-1 engines: int4
  fused with its graphs captured under the previous and the current GEMV plan (alternating
  rounds), and fp16 fused.
- gemv_ends: the end of the fused int4 GEMVs (the split-K tail reading 4 or 8 splits at a time;
  4-byte-load tiles with 3 register stages or all rounds in flight): each GEMV under each, checks,
  compiled batch-1 engines before / after, then the GPU-only tests of the split-K kernels.

Every figure comes with the copy bandwidth measured in the same run; the JSON goes to
DIR/gpu_decode.json and the table to stdout.
"""
from __future__ import annotations

import argparse
import functools
import json
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from labkit.kernels import dispatch, launch, measure, w4a16_gemm, w4a16_gemv, w4a16_tc, w4a16_tc_async
from labkit.kernels.packing import random_int4_layer

LAYER = {"qkv": (12288, 4096), "o": (4096, 4096), "gate_up": (22016, 4096), "down": (4096, 11008)}
LM_HEAD = (32000, 4096)
BATCHES = (1, 2, 4, 8, 16, 32)


def _checker(rows: list[dict]):
    """run(name, fn): a check row (ok and fn's value, or the assertion's message) appended to rows."""

    def run(name, fn):
        try:
            rows.append({"check": name, "ok": True, "value": fn()})
        except AssertionError as e:
            rows.append({"check": name, "ok": False, "message": str(e)[:300]})
        measure.log(f"check {name}: {rows[-1]}")

    return run


def checks(tokenizer: str | None) -> list[dict]:
    rows = []
    run = _checker(rows)
    launch.set_overlap(True)
    for _ in range(2):   # the second call takes the fast, overlapped launch
        run("gemv 12288x4096", lambda: w4a16_gemv.check(12288, 4096, 128, tile=None))
        run("gemv 4096x11008", lambda: w4a16_gemv.check(4096, 11008, 128, tile=None))
        run("tc M=8 22016x4096", lambda: w4a16_tc.check(8, 22016, 4096, 128, tile=None))
        run("gemm M=4 4096x4096", lambda: w4a16_gemm.check(4, 4096, 4096, 128, tile=None))
    if tokenizer:
        run("engine tokens, graphs + overlap = eager without (int4)", lambda: engine_tokens_equal(tokenizer, False))
    return rows


def engine_tokens_equal(tokenizer_dir: str, compiled: bool) -> bool:
    """Greedy tokens of a small random W4A16 model, one prompt at a time: without overlap (eager
    steps, or compiled graph replays) against graph replays with overlap. Equal, not close: the
    same kernels on the same shapes."""
    from labkit.engine import LLM
    from labkit.models import Llama, LlamaConfig, Tokenizer
    from labkit.models.sampling import SamplingParams

    tok = Tokenizer(tokenizer_dir)
    cfg = LlamaConfig(vocab_size=tok.vocab_size, hidden_size=1024, intermediate_size=2816, num_hidden_layers=4,
                      num_attention_heads=8, num_key_value_heads=8, head_dim=128, max_position_embeddings=1024)
    prompts = [list(range(100 + 37 * i, 100 + 37 * i + n)) for i, n in enumerate((5, 40, 17))]
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    out = {}
    for overlap in (False, True):
        launch.set_overlap(overlap)
        torch.manual_seed(0)
        with torch.device("cuda"):
            model = Llama(cfg).half()
        llm = LLM(model, tokenizer=tok, backend="numba", weights="int4", max_batch_size=8, max_model_len=512,
                  num_blocks=128, use_cuda_graph=overlap or compiled, compile=compiled)
        out[overlap] = [llm.generate([p], params)[0].token_ids for p in prompts]
        del llm, model
        measure.free_memory()
    launch.set_overlap(True)
    assert out[True] == out[False], "tokens differ"
    return True


def _rms(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-5)).half() * w


def kernel_rows(copy_gbps: float) -> list[dict]:
    """us per GEMV (20 back to back in a graph) and per layer chain, overlap off / on."""
    rows = []
    shapes = {**LAYER, "lm_head": LM_HEAD}
    for name, (n, k) in shapes.items():
        nbytes = n * k // 2 + n * k // 128 * 2 + n * k // 128 // 2
        sets = measure.sets_for(nbytes)
        layers = [random_int4_layer(n, k, 128, "cuda") for _ in range(sets)]
        x = torch.randn(k, device="cuda").half()
        out = torch.empty(n, device="cuda", dtype=torch.float16)
        row = {"kernel": "w4a16_gemv", "shape": f"{name} {n}x{k}", "bytes": nbytes}
        for overlap in (False, True, False, True):
            launch.set_overlap(overlap)
            us = measure.time_us(lambda i: w4a16_gemv.w4a16_gemv(x, *layers[i], 128, out=out), sets)
            row.setdefault("overlap" if overlap else "plain", []).append(round(us, 2))
        row["plain_us"], row["overlap_us"] = min(row["plain"]), min(row["overlap"])
        row["copy_frac_overlap"] = round(nbytes / (row["overlap_us"] * 1e-6) / 1e9 / copy_gbps, 3)
        rows.append(row)
        measure.log(f"kernels {row}")
        del layers
        measure.free_memory()

    # one decoder layer's linear chain, with the element-wise kernels between the GEMVs
    sets = 4
    weights = [{name: random_int4_layer(n, k, 128, "cuda") for name, (n, k) in LAYER.items()} for _ in range(sets)]
    h, w = torch.randn(4096, device="cuda").half(), torch.rand(4096, device="cuda").half()

    def layer(i: int) -> None:
        L = weights[i]
        a = _rms(h, w)
        q = w4a16_gemv.w4a16_gemv(a, *L["qkv"], 128)
        o = w4a16_gemv.w4a16_gemv(q[:4096].contiguous(), *L["o"], 128)
        b = _rms(h + o, w)
        gu = w4a16_gemv.w4a16_gemv(b, *L["gate_up"], 128)
        m = (F.silu(gu[:11008]) * gu[11008:]).contiguous()
        w4a16_gemv.w4a16_gemv(m, *L["down"], 128)

    row = {"kernel": "layer chain (int4)", "shape": "norm qkv o norm gate_up silu down"}
    for overlap in (False, True, False, True):
        launch.set_overlap(overlap)
        row.setdefault("overlap" if overlap else "plain", []).append(round(measure.time_us(layer, sets, calls=8), 2))
    row["plain_us"], row["overlap_us"] = min(row["plain"]), min(row["overlap"])
    rows.append(row)
    measure.log(f"kernels {row}")
    launch.set_overlap(True)
    return rows


def _copies(layer: tuple[torch.Tensor, ...], sets: int) -> list[tuple[torch.Tensor, ...]]:
    """`sets` copies of a layer's tensors at other addresses (what rotating past L2 needs; random
    packing of each on the CPU would take longer than the timings)."""
    return [layer] + [tuple(t.clone() for t in layer) for _ in range(sets - 1)]


def _resources(m: int, tile: tuple[int, ...]) -> dict:
    """Registers and local memory (spills) per thread of w4a16_tc_async's kernel for M rows and `tile`."""
    kernel = w4a16_tc_async.make_kernel(-(-m // w4a16_tc.ROWS_PER_MMA), *tile[:2], *tile[3:])

    def values(v):   # one per compiled signature
        return sorted(set(v.values())) if isinstance(v, dict) else [v]

    return {"regs": values(kernel.get_regs_per_thread()), "local_bytes": values(kernel.get_local_mem_per_thread())}


ROW_COUNTS = (1, 2, 4, 8, 16, 24, 32)


def batch_rows() -> list[dict]:
    """One layer's four linear layers at M rows: W4A16 (the dispatcher's kernel) against fp16
    F.linear, us, each with its weights rotated past L2. From 2 rows also both tensor-core
    kernels (w4a16_tc: its register ring; w4a16_tc_async: cp.async into shared memory, in each
    of its LAYOUTS and PER_WARP), and up to 8 rows the CUDA-core GEMM: the measurements behind the plans and
    the dispatcher's rule."""
    rows = []
    sets = {name: measure.sets_for(n * k // 2) for name, (n, k) in LAYER.items()}
    layers = {name: _copies(random_int4_layer(n, k, 128, "cuda"), sets[name]) for name, (n, k) in LAYER.items()}
    dense_sets = {name: measure.sets_for(2 * n * k) for name, (n, k) in LAYER.items()}
    dense = {name: [torch.randn(n, k, device="cuda").half() * 0.02 for _ in range(dense_sets[name])]
             for name, (n, k) in LAYER.items()}
    for m in ROW_COUNTS:
        row = {"m": m, "int4": {}, "fp16": {}, "choice": {}, "tc": {}, "tc_async": {}, "gemm": {}}
        for name, (n, k) in LAYER.items():
            x = torch.randn(m, k, device="cuda").half()
            out = torch.empty(m, n, device="cuda", dtype=torch.float16)

            def us(fn, **options) -> float:
                return round(measure.time_us(lambda i: fn(x, *layers[name][i], 128, out=out, **options),
                                             sets[name]), 2)

            row["choice"][name] = dispatch.choose(m, n, k, 128)
            row["fp16"][name] = round(measure.time_us(lambda i: F.linear(x, dense[name][i]), dense_sets[name]), 2)
            row["int4"][name] = round(measure.time_us(lambda i: dispatch.w4a16_linear(x, *layers[name][i], 128),
                                                      sets[name]), 2)
            if m > 1:
                row["tc"][name] = {"tile": list(w4a16_tc.plan(m, n, k, 128)), "us": us(w4a16_tc.w4a16_tc)}
                row["tc_async"][name] = []
                for layout in w4a16_tc_async.LAYOUTS:
                    for per_warp in w4a16_tc_async.PER_WARP:
                        tile = w4a16_tc_async.plan(m, n, k, 128, layout=layout, per_warp=per_warp)
                        timed = us(w4a16_tc_async.w4a16_tc_async, tile=tile)
                        row["tc_async"][name].append({"tile": list(tile), "us": timed, **_resources(m, tile)})
            if 1 < m <= w4a16_gemm.MAX_ROWS:
                row["gemm"][name] = us(w4a16_gemm.w4a16_gemm)
        row["int4_total"], row["fp16_total"] = round(sum(row["int4"].values()), 1), round(sum(row["fp16"].values()), 1)
        if m > 1:
            planned = {name: list(w4a16_tc_async.plan(m, n, k, 128)) for name, (n, k) in LAYER.items()}
            row["tc_total"] = round(sum(v["us"] for v in row["tc"].values()), 1)
            row["tc_async_total"] = round(sum(v["us"] for name in LAYER for v in row["tc_async"][name]
                                              if v["tile"] == planned[name]), 1)
        rows.append(row)
        measure.log(f"rows {row}")
    return rows


ROOT = Path(__file__).resolve().parents[1]   # the repository (this script may run from another folder)
TC_TESTS = [str(ROOT / t) for t in ("tests/kernels/test_cp_async.py",
                                    "tests/kernels/test_linear_kernels.py::test_w4a16_tc_async")]


def tc_checks(out_dir: str) -> dict:
    """The cp.async tensor-core kernel (its plan) against float64 on each layer shape at 2-32 rows
    (1, 2 and 4 B tiles; 13 a partial one), and its tests (small shapes) run on this GPU."""
    rows = []
    run = _checker(rows)
    for m in (2, 13, 16, 32):
        for name, (n, k) in LAYER.items():
            run(f"tc_async M={m} {name} {n}x{k}", lambda: w4a16_tc_async.check(m, n, k, 128, tile=None))
    return {"checks": rows, "tests": gpu_tests(TC_TESTS, Path(out_dir, "tc_tests.log"))}


def gpu_tests(paths: list[str], log: Path) -> dict:
    """Run these tests on this GPU (pytest in a child process); the whole output goes to `log`."""
    import subprocess

    start = time.time()
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore",
                            "--tb=short", "-m", "", *paths], capture_output=True, text=True)
    log.write_text(tests.stdout + tests.stderr)
    return {"ok": tests.returncode == 0, "seconds": round(time.time() - start, 1),
            "tail": tests.stdout[-1500:] + tests.stderr[-500:]}


def engine_bench(tokenizer: str | None, out_dir: str) -> dict:
    """`labkit bench engine --shape llama-2-7b --weights fp16,int4 --compile`, static batches 1-32,
    in this process (both compiled engines in one process)."""
    from labkit.engine import bench

    path = Path(out_dir) / "bench_engine.json"
    argv = ["--shape", "llama-2-7b", "--weights", "fp16,int4", "--compile", "--mode", "static", "--no-hf",
            "--batch-sizes", ",".join(map(str, BATCHES)), "--output-len", "32", "--max-model-len", "1024",
            "--out", str(path)] + (["--tokenizer", tokenizer] if tokenizer else [])
    bench.main(argv)
    result = json.loads(path.read_text())
    return {"command": result["command"], "static": result["static"], "ratios": result.get("ratios")}


def close_engines(llms: dict) -> None:
    """Close every engine of `llms` (name -> LLM), drop them and give their memory back."""
    for llm in llms.values():
        llm.close()
    llms.clear()
    measure.free_memory()


def decode_ms(llm, batch: int, rng: random.Random, vocab: int, steps: int = 48) -> float:
    """ms per decode step at `batch`: generating 1 + steps tokens minus generating 1 (fresh prompts)."""
    from labkit.models.sampling import SamplingParams

    def timed(tokens: int) -> float:
        prompts = [[rng.randrange(100, vocab) for _ in range(128)] for _ in range(batch)]
        torch.cuda.synchronize()
        start = time.perf_counter()
        llm.generate(prompts, SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True))
        torch.cuda.synchronize()
        return time.perf_counter() - start

    return round(1000 * min(timed(1 + steps) - timed(1) for _ in range(2)) / steps, 3)


def first_token_ms(llm, rng: random.Random, vocab: int, prompt_len: int = 128) -> float:
    """Median ms to the first token of one fresh prompt (the prefill step: eager, dequantized weights for int4)."""
    from labkit.models.sampling import SamplingParams

    times = []
    for _ in range(5):
        prompt = [rng.randrange(100, vocab) for _ in range(prompt_len)]
        torch.cuda.synchronize()
        start = time.perf_counter()
        llm.generate([prompt], SamplingParams(temperature=0, max_tokens=1, ignore_eos=True))
        torch.cuda.synchronize()
        times.append(1000 * (time.perf_counter() - start))
    return round(sorted(times)[2], 2)


def step_timeline(llm, vocab: int) -> dict:
    """The batch-1 profile of `labkit bench engine --mode profile`: kernels per step, the gaps
    between them, and the kernels that take the time."""
    from labkit.engine.workload import profile_decode

    prof = profile_decode(llm, [random.Random(1).randrange(100, vocab) for _ in range(128)], top=14)
    keys = ("kernels_per_step", "gap_us_median", "gap_us_mean", "gap_us_per_step", "total_us_per_step",
            "wall_ms_per_step")
    return {**{k: prof[k] for k in keys}, "top": [(r["us_per_step"], r["name"][:90]) for r in prof["rows"]]}


def engine_rows(copy_gbps: float, tokenizer: str | None) -> dict:
    from labkit.engine import LLM
    from labkit.engine.bench import decode_weight_bytes, random_model
    from labkit.models import Tokenizer, resolve

    tok = Tokenizer(tokenizer or resolve("embedded"))
    rng = random.Random(0)
    vocab = 32000
    out: dict = {}
    for weights in ("int4", "fp16"):
        launch.set_overlap(False)   # the default; the A/B below turns it on
        start = time.time()
        model = random_model("llama-2-7b", "cuda", torch.float16)
        llm = LLM(model, tokenizer=tok, backend="numba", weights=None if weights == "fp16" else weights,
                  compile=True, max_batch_size=32, max_model_len=4096, cache_max_entry_count=0.3)
        runner = llm.engine.runner
        res = {"build_s": round(time.time() - start, 1), "weight_bytes": decode_weight_bytes(llm.model)}
        res["roofline_ms"] = round(res["weight_bytes"] / (copy_gbps * 1e9) * 1e3, 3)
        decode_ms(llm, 1, rng, vocab, steps=8)   # warm up
        res["ms_per_step"] = {b: decode_ms(llm, b, rng, vocab) for b in BATCHES}
        measure.log(f"engine {weights}: {res}")
        ab = {}
        for overlap in (False, True, False, True):   # the same engine, graphs re-captured (buckets 1-8)
            launch.set_overlap(overlap)
            runner.graphs.clear()
            runner.capture_graphs(8)
            for b in (1, 8):
                ab.setdefault(f"B={b} {'overlap' if overlap else 'plain'}", []).append(decode_ms(llm, b, rng, vocab))
        res["overlap_ab"] = ab
        measure.log(f"engine {weights} A/B: {ab}")
        for overlap in (False, True):
            launch.set_overlap(overlap)
            runner.graphs.clear()
            runner.capture_graphs(1)
            key = "timeline_overlap" if overlap else "timeline_plain"
            res[key] = step_timeline(llm, vocab)
            measure.log(f"engine {weights} {key}: {res[key]}")
        b1 = min(res["overlap_ab"]["B=1 plain"] + [res["ms_per_step"][1]])
        res["batch1_tok_s"] = round(1000 / b1, 1)
        res["batch1_fraction_of_roofline"] = round(res["roofline_ms"] / b1, 3)
        out[weights] = res
        llm.close()
        del llm, model, runner
        measure.free_memory()
    return out


# the fused variant each GEMV of a layer runs at batch 1 (labkit.engine.fuse.FusedDecoderLayer)
SETS = 8   # weight sets rotated in the fused kernel timings: o (8.4 MB) x 8 is past the 50 MB L2
FUSED = {"qkv": ("rmsnorm", False), "o": ("none", True), "gate_up": ("rmsnorm", False), "down": ("silu_mul", True)}
FUSED_TESTS = [str(ROOT / t) for t in (
    "tests/engine/test_fused_decode_gpu.py", "tests/engine/test_cuda_graphs_gpu.py", "tests/kernels/test_overlap.py",
    "tests/kernels/test_fused_gemv.py::test_residual_is_added_once_as_torch_adds",
    "tests/kernels/test_fused_gemv.py::test_fused_whole_warps")]


def _fused_args(name: str, n: int, k: int, sets: int) -> list[dict]:
    """Inputs of `name`'s fused GEMV (x of the right width, norm weight, residual), one per set."""
    prologue, residual = FUSED[name]
    width = 2 * k if prologue == "silu_mul" else k
    return [{"x": torch.randn(width, device="cuda").half(), "prologue": prologue,
             "norm": torch.rand(k, device="cuda").half() + 0.5 if prologue == "rmsnorm" else None,
             "residual": torch.randn(n, device="cuda").half() if residual else None} for _ in range(sets)]


def fused_part(copy_gbps: float, tokenizer: str | None, out_dir: str, result: dict, save) -> None:
    """Checks, the GPU-only tests, kernel times and the engines of the fused batch-1 path (see the top)."""
    rows: list[dict] = []
    run = _checker(rows)
    launch.set_overlap(True)
    for _ in range(2):   # the second call takes the fast, overlapped launch
        for name, (n, k) in LAYER.items():
            prologue, residual = FUSED[name]
            run(f"fused {name} {n}x{k} {prologue}{' + residual' if residual else ''}",
                lambda: w4a16_gemv.check(n, k, 128, tile=None, prologue=prologue, residual=residual))
    result["fused_checks"] = rows
    save()

    result["fused_tests"] = gpu_tests(FUSED_TESTS, Path(out_dir, "fused_tests.log"))
    measure.log(f"fused tests: {result['fused_tests']}")
    save()

    # each GEMV plain and fused, and a layer's four (20 calls per graph replay), overlap off / on
    kernels = []
    weights = {name: [random_int4_layer(n, k, 128, "cuda") for _ in range(SETS)] for name, (n, k) in LAYER.items()}
    args = {name: _fused_args(name, n, k, SETS) for name, (n, k) in LAYER.items()}
    for name, (n, k) in LAYER.items():
        x = torch.randn(k, device="cuda").half()
        row = {"shape": f"{name} {n}x{k}", "variant": "/".join(map(str, FUSED[name]))}
        for overlap in (False, True, False, True):
            launch.set_overlap(overlap)
            tag = "overlap" if overlap else "plain"
            row.setdefault(f"plain_gemv_{tag}", []).append(round(measure.time_us(
                lambda i: w4a16_gemv.w4a16_gemv(x, *weights[name][i], 128), SETS), 2))
            row.setdefault(f"fused_gemv_{tag}", []).append(round(measure.time_us(
                lambda i: w4a16_gemv.w4a16_gemv(args[name][i]["x"], *weights[name][i], 128,
                                                prologue=args[name][i]["prologue"], norm=args[name][i]["norm"],
                                                residual=args[name][i]["residual"]), SETS), 2))
        kernels.append(row)
        measure.log(f"fused kernels {row}")

    def layer(i: int, fused: bool) -> None:
        for name, (n, k) in LAYER.items():
            a = args[name][i]
            if fused:
                w4a16_gemv.w4a16_gemv(a["x"], *weights[name][i], 128, prologue=a["prologue"], norm=a["norm"],
                                      residual=a["residual"])
            else:
                w4a16_gemv.w4a16_gemv(a["x"][:k], *weights[name][i], 128)   # (x's first K: gate, for down)

    for fused in (False, True):
        row = {"shape": "a layer's four GEMVs", "variant": "fused" if fused else "plain"}
        for overlap in (False, True, False, True):
            launch.set_overlap(overlap)
            row.setdefault("overlap" if overlap else "plain", []).append(
                round(measure.time_us(lambda i: layer(i, fused), SETS, calls=8), 2))
        kernels.append(row)
        measure.log(f"fused kernels {row}")
    launch.set_overlap(False)
    result["fused_kernels"] = kernels
    del weights, args
    measure.free_memory()
    save()
    result["fused_engine"] = {}
    fused_engines(copy_gbps, tokenizer, result["fused_engine"], save)


FUSED_ENGINES = {"fp16": (None, False), "int4": ("int4", False), "int4 fused": ("int4", True)}


def fused_engines(copy_gbps: float, tokenizer: str | None, out: dict, save, variants: dict = FUSED_ENGINES,
                  pdl: bool = True) -> None:
    """Compiled batch-1 engines (graphs, overlap off) side by side: `variants` (name: (weights,
    fused)), fp16, int4, int4 fused by default; greedy tokens of each fused engine against its
    unfused twin where there is one; then (`pdl`) int4 fused again with Inductor's programmatic
    dependent launch, overlap off and on."""
    from labkit.engine import LLM
    from labkit.engine.bench import decode_weight_bytes, random_model
    from labkit.engine.fuse import set_fused_decode
    from labkit.models import Tokenizer, resolve
    from labkit.models.sampling import SamplingParams

    tok = Tokenizer(tokenizer or resolve("embedded"))
    rng, vocab = random.Random(0), 32000
    prompt = [random.Random(7).randrange(100, vocab) for _ in range(128)]

    def build(weights: str | None, fused: bool):
        set_fused_decode(fused)
        torch.manual_seed(0)   # the same random weights for int4 and int4 fused
        start = time.time()
        model = random_model("llama-2-7b", "cuda", torch.float16)
        llm = LLM(model, tokenizer=tok, backend="numba", weights=weights, compile=True, max_batch_size=1,
                  max_model_len=1024, cache_max_entry_count=0.1)
        set_fused_decode(False)
        decode_ms(llm, 1, rng, vocab, steps=8)   # warm up
        res = {"build_s": round(time.time() - start, 1), "weight_bytes": decode_weight_bytes(llm.model)}
        res["roofline_ms"] = round(res["weight_bytes"] / (copy_gbps * 1e9) * 1e3, 3)
        return llm, res

    def tokens(llm) -> list[int]:
        return llm.generate([prompt], SamplingParams(temperature=0, max_tokens=32, ignore_eos=True))[0].token_ids

    llms = {}
    for name, (weights, fused) in variants.items():
        llms[name], out[name] = build(weights, fused)
        measure.log(f"fused engine {name} built: {out[name]}")
    for _ in range(3):   # alternating rounds
        for name, llm in llms.items():
            out[name].setdefault("ms_per_step_b1", []).append(decode_ms(llm, 1, rng, vocab))
    for name, llm in llms.items():
        out[name]["timeline"] = step_timeline(llm, vocab)
        b1 = min(out[name]["ms_per_step_b1"])
        out[name]["batch1_tok_s"] = round(1000 / b1, 1)
        out[name]["batch1_fraction_of_roofline"] = round(out[name]["roofline_ms"] / b1, 3)
        measure.log(f"fused engine {name}: {out[name]}")
    for name in [n for n in variants if n.endswith(" fused") and n[:-len(" fused")] in variants]:
        plain, fused = tokens(llms[name[:-len(" fused")]]), tokens(llms[name])
        out[name]["tokens_equal_unfused"] = plain == fused
        out[name]["tokens_equal_prefix"] = next((i for i, (a, b) in enumerate(zip(plain, fused)) if a != b), len(plain))
    close_engines(llms)
    save()

    # Inductor's kernels also wait for / release their neighbours: overlap off and on, graphs re-captured
    import torch._inductor.config as inductor_config

    if not pdl:
        return
    if not hasattr(inductor_config.triton, "enable_pdl"):
        out["pdl"] = "torch._inductor.config.triton.enable_pdl is missing in this torch"
        return
    inductor_config.triton.enable_pdl = True
    out["pdl"] = {}
    for name in ("int4 fused",):   # (int4 unfused with PDL: docs/bench/fused_decode_h200_run1.json)
        weights, fused = variants[name]
        llm, res = build(weights, fused)
        runner = llm.engine.runner
        for overlap in (False, True, False, True):
            launch.set_overlap(overlap)
            runner.graphs.clear()
            runner.capture_graphs(1)
            res.setdefault("overlap" if overlap else "plain", []).append(decode_ms(llm, 1, rng, vocab))
        res["timeline_overlap"] = step_timeline(llm, vocab)
        launch.set_overlap(False)
        out["pdl"][name] = res
        measure.log(f"fused engine pdl {name}: {res}")
        llm.close()
        del llm, runner
        measure.free_memory()
        save()
    inductor_config.triton.enable_pdl = False


# attention with the rotary embedding and the K/V write inside (labkit.kernels.paged_attention.NewTokens)
ROPE_TESTS = [str(ROOT / t) for t in ("tests/kernels/test_attention.py", "tests/engine/test_numba_backend.py",
                                      "tests/engine/test_cuda_graphs_gpu.py", "tests/engine/test_fused_decode_gpu.py",
                                      "tests/kernels/test_linear_kernels.py::test_dequant_is_exact")]


def rope_part(copy_gbps: float, out_dir: str, result: dict, save) -> None:
    """Checks on the 7B shapes, the GPU-only tests, the attention kernel with the new tokens
    inside against the three kernels it replaces, and the dequantization kernel's bandwidth."""
    from labkit.kernels import dequant, kv_quant

    rows: list[dict] = []
    run = _checker(rows)
    for bits in (16, 8, 4):
        run(f"attention + new tokens, {'fp16' if bits == 16 else f'int{bits}'} cache, 32/32 heads D=128",
            lambda: kv_quant.check_new_tokens(bits, (1, 177, 700, 4099), 32, 32, 128, partition=None))
    run("attention + new tokens, fp16 cache, 32/8 heads D=128",
        lambda: kv_quant.check_new_tokens(16, (1, 177, 4099), 32, 8, 128, partition=None))
    for name, (n, k) in LAYER.items():
        run(f"dequant {name} {n}x{k}", lambda: dequant.check(n, k, 128))
    result["rope_checks"] = rows
    save()
    result["rope_tests"] = gpu_tests(ROPE_TESTS, Path(out_dir, "rope_tests.log"))
    save()
    result["rope_kernels"] = rope_kernel_rows(copy_gbps)
    save()


def rope_kernel_rows(copy_gbps: float) -> list[dict]:
    """us per decode layer: rotary (one compiled kernel, as Inductor makes it in the engine's
    step) + write_kv + attention, against the one attention kernel with NewTokens; Llama-2-7B
    heads, CUDA-graph replays. And the int4 -> fp16 dequantization of each layer's weights."""
    from labkit.kernels import dequant, kv_quant, paged_attention
    from labkit.models.llama import apply_rope

    rope = torch.compile(lambda q, k, cos, sin: (apply_rope(q, cos, sin), apply_rope(k, cos, sin)))
    out = []
    for batch, context in ((1, 177), (1, 1025), (8, 177), (32, 177)):
        k_cache, v_cache, tables, lens = paged_attention.bench_cache(batch, context, 32)
        q = torch.randn(batch, 32, 128, device="cuda", dtype=torch.float16)
        k_new, v_new = (torch.randn(batch, 32, 128, device="cuda", dtype=torch.float16) for _ in range(2))
        pos = lens.long() - 1
        slots = tables[torch.arange(batch, device="cuda"), pos // 16].long() * 16 + pos % 16
        angles = pos[:, None].float() * 10000.0 ** -(torch.arange(0, 128, 2, device="cuda") / 128)
        cos, sin = (torch.cat([f(angles)] * 2, -1).half() for f in (torch.cos, torch.sin))
        res = torch.empty_like(q)
        new = paged_attention.NewTokens(k_new, v_new, cos, sin, slots)

        def separate(i: int) -> None:
            qr, kr = rope(q[:, None], k_new[:, None], cos[:, None, None], sin[:, None, None])
            kv_quant.write_kv(kr[:, 0], v_new, slots, k_cache, v_cache)
            paged_attention.paged_attention(qr[:, 0].contiguous(), k_cache, v_cache, tables, lens,
                                            max_context_len=context, out=res)

        def fused(i: int) -> None:
            paged_attention.paged_attention(q, k_cache, v_cache, tables, lens, max_context_len=context, out=res,
                                            new=new)

        def plain(i: int) -> None:
            paged_attention.paged_attention(q, k_cache, v_cache, tables, lens, max_context_len=context, out=res)

        row = {"batch": batch, "context": context,
               **{name: round(measure.time_us(fn, 1, calls=20, repeats=9), 2)
                  for name, fn in (("rope_write_attention_us", separate), ("attention_new_tokens_us", fused),
                                   ("attention_alone_us", plain))}}
        measure.log(f"rope kernels {row}")
        out.append(row)
        del k_cache, v_cache
        measure.free_memory()
    for name, (n, k) in LAYER.items():
        layer = random_int4_layer(n, k, 128, "cuda")
        wt = torch.empty(k, n, dtype=torch.float16, device="cuda")
        us = measure.time_us(lambda i: dequant.dequantize_t(*layer, 128, out=wt), 1, calls=20, repeats=9)
        moved = n * k * 2 + n * k // 2 + (k // 128) * n * 2.5   # fp16 written, int4 and group constants read
        out.append({"dequant": name, "n": n, "k": k, "us": round(us, 2),
                    "copy_frac": round(moved / (us * 1e-6) / (copy_gbps * 1e9), 3)})
        measure.log(f"rope kernels {out[-1]}")
    return out


def rope_engines(copy_gbps: float, tokenizer: str | None) -> dict:
    """Compiled Llama-2-7B engines at batch 1 (random weights, CUDA graphs), fp16 and int4, with the
    rotary embedding and K/V write inside attention off and on: ms per step in alternating
    rounds, kernels per step and the gaps (the profile mode)."""
    from labkit.engine import LLM
    from labkit.engine.bench import decode_weight_bytes, random_model
    from labkit.engine.paged_attention import set_rotary_in_attention
    from labkit.models import Tokenizer, resolve

    tok = Tokenizer(tokenizer or resolve("embedded"))
    rng = random.Random(0)
    vocab = 32000
    llms, out = {}, {}
    previous = set_rotary_in_attention(True)
    for weights in ("fp16", "int4"):
        for inside in (False, True):
            name = f"{weights} rotary {'inside' if inside else 'apart'}"
            set_rotary_in_attention(inside)
            start = time.time()
            llm = LLM(random_model("llama-2-7b", "cuda", torch.float16), tokenizer=tok, backend="numba",
                      weights=None if weights == "fp16" else weights, compile=True, max_batch_size=1,
                      max_model_len=1024, cache_max_entry_count=0.05)
            decode_ms(llm, 1, rng, vocab, steps=8)   # warm up
            res = {"build_s": round(time.time() - start, 1), "weight_bytes": decode_weight_bytes(llm.model)}
            res["roofline_ms"] = round(res["weight_bytes"] / (copy_gbps * 1e9) * 1e3, 3)
            llms[name], out[name] = (llm, inside), res
            measure.log(f"rope engine {name} built: {res}")
    for _ in range(3):   # alternating rounds (the setting as each engine's graphs were captured)
        for name, (llm, inside) in llms.items():
            set_rotary_in_attention(inside)
            out[name].setdefault("ms_per_step_b1", []).append(decode_ms(llm, 1, rng, vocab))
    for name, (llm, inside) in llms.items():
        set_rotary_in_attention(inside)
        out[name]["timeline"] = step_timeline(llm, vocab)
        b1 = min(out[name]["ms_per_step_b1"])
        out[name]["batch1_tok_s"] = round(1000 / b1, 1)
        out[name]["batch1_fraction_of_roofline"] = round(out[name]["roofline_ms"] / b1, 3)
        measure.log(f"rope engine {name}: {out[name]}")
        llm.close()
    set_rotary_in_attention(previous)
    del llms
    measure.free_memory()
    return out


def load_engines(copy_gbps: float, tokenizer: str | None, requests: int) -> dict:
    """fp16 and int4 compiled Llama-2-7B engines (the defaults: rotary inside attention, fused int4
    decode layers) side by side: the first token of a 128-token prompt, ms per decode step at
    batch 1-32, then the bench's chat workload
    (`labkit bench engine --mode dynamic`'s: continuous batching, requests arriving at 100/s)."""
    from labkit.engine import LLM
    from labkit.engine.bench import random_model
    from labkit.engine.workload import chat_workload, drive_engine, greedy, text_ids
    from labkit.models import Tokenizer, resolve

    tok = Tokenizer(tokenizer or resolve("embedded"))
    rng = random.Random(0)
    vocab = 32000
    reqs = chat_workload(requests, 100.0, 1.0, vocab, 0, text_ids(vocab, tokenizer), 2048)
    out: dict = {"workload": {"requests": requests, "rate_req_s": 100.0, "scale": 1.0,
                              "prompt_tokens": sum(len(r.prompt) for r in reqs),
                              "output_tokens": sum(r.output_len for r in reqs)}}
    llms = {}
    for weights in ("fp16", "int4"):
        start = time.time()
        llms[weights] = LLM(random_model("llama-2-7b", "cuda", torch.float16), tokenizer=tok, backend="numba",
                            weights=None if weights == "fp16" else weights, compile=True, max_batch_size=32,
                            max_model_len=2048, cache_max_entry_count=0.25)
        decode_ms(llms[weights], 1, rng, vocab, steps=8)   # warm up
        out[weights] = {"build_s": round(time.time() - start, 1)}
        measure.log(f"load engine {weights} built: {out[weights]}")
    for weights, llm in llms.items():
        out[weights]["ttft_ms_b1_128"] = first_token_ms(llm, rng, vocab)
        out[weights]["ms_per_step"] = {b: decode_ms(llm, b, rng, vocab) for b in BATCHES}
        measure.log(f"load engine {weights}: {out[weights]}")
    for _ in range(2):   # alternating rounds of the whole workload
        for weights, llm in llms.items():
            llm.generate([reqs[0].prompt], greedy(2))
            out[weights].setdefault("chat", []).append(drive_engine(llm, reqs, f"chat-{weights}"))
            measure.log(f"load engine {weights} chat: {out[weights]['chat'][-1]}")
    close_engines(llms)
    return out


# the fp16 GEMV (labkit.kernels.f16_gemv) against cuBLAS, and the fusions of the fp16 decode step
F16_TESTS = [str(ROOT / "tests/kernels/test_f16_gemv.py")]
F16_FUSED = {"qkv": ("rmsnorm", False), "o": ("none", True), "gate_up": ("rmsnorm", False), "down": ("silu_mul", True)}
F16_TILES = [(r, u, w) for r in (1, 2, 4) for u in (2, 4, 8) for w in (2, 4, 8)]
F16_FUSED_TILES = [(r, u, 2) for r in (1, 2, 4) for u in (2, 4, 8)]


def f16_part(copy_gbps: float, out_dir: str, result: dict, save) -> None:
    """Checks on the 7B shapes (each fusion, plain and overlapped launches), the GPU-only tests,
    every tile of F16_TILES against cuBLAS (F.linear on the same [N, K] weights) per shape, and
    each layer's fused GEMV against the plain one."""
    from labkit.kernels import f16_gemv

    rows: list[dict] = []
    run = _checker(rows)
    launch.set_overlap(True)
    for _ in range(2):   # the second call takes the fast, overlapped launch
        for name, (n, k) in {**LAYER, "lm_head": LM_HEAD}.items():
            prologue, residual = F16_FUSED.get(name, ("none", False))
            for p, r in {("none", False), (prologue, residual)}:
                run(f"f16 {name} {n}x{k} {p}{' + residual' if r else ''}",
                    lambda: f16_gemv.check(n, k, tile=None, prologue=p, residual=r))
    launch.set_overlap(False)
    result["f16_checks"] = rows
    save()
    result["f16_tests"] = gpu_tests(F16_TESTS, Path(out_dir, "f16_tests.log"))
    save()

    sweep = []
    for name, (n, k) in {**LAYER, "lm_head": LM_HEAD}.items():
        sets = measure.sets_for(2 * n * k)
        weights = [torch.randn(n, k, device="cuda").half() * 0.02 for _ in range(sets)]
        x = torch.randn(k, device="cuda").half()
        out = torch.empty(n, device="cuda", dtype=torch.float16)
        row = {"shape": f"{name} {n}x{k}", "bytes": 2 * n * k,
               "cublas_us": round(measure.time_us(lambda i: torch.mm(x[None], weights[i].t(), out=out[None]), sets), 2),
               "tiles": {}}
        for tile in F16_TILES:
            row["tiles"][str(tile)] = round(measure.time_us(lambda i: f16_gemv.f16_gemv(x, weights[i], out=out,
                                                                                       tile=tile), sets), 2)
        best = min(row["tiles"], key=row["tiles"].get)
        row["best_tile"], row["best_us"] = best, row["tiles"][best]
        row["planned_us"] = row["tiles"].get(str(f16_gemv.plan(n, k)))
        for key in ("cublas_us", "best_us"):
            row[key.replace("us", "copy_frac")] = round(row["bytes"] / (row[key] * 1e-6) / 1e9 / copy_gbps, 3)
        measure.log(f"f16 sweep {row['shape']}: cublas {row['cublas_us']} best {best} {row['best_us']}")
        # the fusion this layer gets in the decode step, plain and overlapped, against the plain GEMV
        prologue, residual = F16_FUSED.get(name, ("none", False))
        xf = torch.randn(2 * k if prologue == "silu_mul" else k, device="cuda").half()
        norm = torch.rand(k, device="cuda").half() if prologue == "rmsnorm" else None
        res = torch.randn(n, device="cuda").half() if residual else None
        for tile in F16_FUSED_TILES:
            for overlap in (False, True):
                launch.set_overlap(overlap)
                key = f"fused {prologue}{'+res' if residual else ''} {tile} {'overlap' if overlap else 'plain'}"
                key += " (plan)" if tile == f16_gemv.plan(n, k, prologue) else ""
                row[key] = round(measure.time_us(lambda i: f16_gemv.f16_gemv(
                    xf, weights[i], out=out, tile=tile, prologue=prologue, norm=norm, residual=res), sets), 2)
            launch.set_overlap(False)
        sweep.append(row)
        del weights
        measure.free_memory()
        result["f16_sweep"] = sweep
        save()
    kernel = f16_gemv.make_kernel(*f16_gemv.plan(4096, 4096), "none", False)
    result["f16_resources"] = {"regs": str(kernel.get_regs_per_thread()),
                               "local_bytes": str(kernel.get_local_mem_per_thread())}
    save()


def f16_engines(copy_gbps: float, tokenizer: str | None, out_dir: str, result: dict, save) -> None:
    """The GPU-only tests of the fused decode layers (fp16 and int4), then compiled batch-1 engines
    side by side: fp16 through cuBLAS and Inductor's kernels, fp16 fused (the fp16 GEMVs), int4 fused."""
    result["f16_engine_tests"] = gpu_tests(FUSED_TESTS, Path(out_dir, "f16_engine_tests.log"))
    save()
    result["f16_engine"] = {}
    fused_engines(copy_gbps, tokenizer, result["f16_engine"], save,
                  {"fp16": (None, False), "fp16 fused": (None, True), "int4 fused": ("int4", True)}, pdl=False)


def prefill_engines(tokenizer: str | None) -> dict:
    """The first token of a 128-token prompt (an eager prefill step) with the fused decode layers off
    and on, fp16 and int4 (uncompiled engines: the prefill step runs eagerly either way), alternating."""
    from labkit.engine import LLM
    from labkit.engine.bench import random_model
    from labkit.engine.fuse import set_fused_decode
    from labkit.models import Tokenizer, resolve

    tok = Tokenizer(tokenizer or resolve("embedded"))
    rng, out, llms = random.Random(0), {}, {}
    for weights in ("fp16", "int4"):
        for fused in (False, True):
            set_fused_decode(fused)
            llms[f"{weights} fused={fused}"] = LLM(random_model("llama-2-7b", "cuda", torch.float16), tokenizer=tok,
                                                   backend="numba", weights=None if weights == "fp16" else weights,
                                                   max_batch_size=1, max_model_len=1024, cache_max_entry_count=0.05)
    set_fused_decode(True)
    for _ in range(3):
        for name, llm in llms.items():
            out.setdefault(name, []).append(first_token_ms(llm, rng, 32000))
    measure.log(f"prefill {out}")
    close_engines(llms)
    return out


#: w4a16_gemv tiles swept for each fused GEMV (tx, ty, rounds, depth, min_blocks, width; see w4a16_gemv.plan)
INT4_FUSED_TILES = [(4, 32, 4, 3, 3, 4), (4, 32, 2, 2, 2, 4),
                    (16, 8, 4, 3, 4, 1), (16, 16, 4, 3, 2, 1), (32, 8, 4, 3, 2, 1), (8, 16, 4, 3, 4, 1),
                    (16, 8, 8, 3, 4, 1), (16, 8, 16, 4, 4, 1), (16, 16, 8, 3, 2, 1), (32, 4, 8, 4, 4, 1),
                    (8, 16, 4, 3, 2, 2), (8, 8, 4, 3, 4, 2), (8, 16, 8, 3, 2, 2), (16, 8, 4, 3, 2, 2)]
SCALING_K = (1024, 2048, 4096, 8192, 16384, 32768)   # K of the N = 4096 layers timed for the fixed cost


def _fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least squares t = t0 + bytes / bw over (bytes, us): (t0 in us, bw in GB/s)."""
    n = len(points)
    mx, my = sum(b for b, _ in points) / n, sum(t for _, t in points) / n
    slope = sum((b - mx) * (t - my) for b, t in points) / sum((b - mx) ** 2 for b, _ in points)
    return my - slope * mx, 1e-3 / slope


def int4_scaling(copy_gbps: float, result: dict, save) -> None:
    """What bounds the batch-1 int4 GEMV: its time against its bytes, N = 4096 and K from 1,024 to
    32,768, plain w4a16_gemv and f16_gemv (each at its plan): a fixed cost per launch t0 and the
    bandwidth of the bytes beyond it."""
    from labkit.kernels import f16_gemv

    scaling = []
    for k in SCALING_K:
        n = 4096
        sets = measure.sets_for(n * k // 2)
        weights = [random_int4_layer(n, k, 128, "cuda") for _ in range(sets)]
        x = torch.randn(k, device="cuda").half()
        int4_bytes = n * k // 2 + (k // 128) * n * 2 + (k // 128) * n // 2
        row = {"n": n, "k": k, "int4_bytes": int4_bytes,
               "int4_us": round(measure.time_us(lambda i: w4a16_gemv.w4a16_gemv(x, *weights[i], 128), sets), 2)}
        del weights
        sets = measure.sets_for(2 * n * k)
        dense = [torch.randn(n, k, device="cuda").half() for _ in range(sets)]
        row.update(f16_bytes=2 * n * k, f16_us=round(measure.time_us(lambda i: f16_gemv.f16_gemv(x, dense[i]), sets), 2))
        del dense
        measure.free_memory()
        scaling.append(row)
        measure.log(f"int4 bounds scaling {row}")
    fits = {}
    for kind in ("int4", "f16"):
        t0, bw = _fit([(r[f"{kind}_bytes"], r[f"{kind}_us"]) for r in scaling])
        fits[kind] = {"t0_us": round(t0, 2), "gbps": round(bw, 1), "of_copy": round(bw / copy_gbps, 3)}
    result["int4_scaling"] = {"rows": scaling, "fit": fits}
    save()


def _fused_int4_us(name: str, weights: list, args: list[dict], tile: tuple[int, ...] | None = None) -> float:
    """us per call of `name`'s fused int4 GEMV, rotating the SETS weight and input sets."""
    prologue, residual = FUSED[name]
    return round(measure.time_us(lambda i: w4a16_gemv.w4a16_gemv(
        args[i]["x"], *weights[i], 128, tile=tile, prologue=prologue, norm=args[i]["norm"],
        residual=args[i]["residual"]), SETS), 2)


def int4_sweep(result: dict, save) -> None:
    """Each fused int4 GEMV of the decode step over INT4_FUSED_TILES: its relative error against
    float64 (`check` raises past the tolerance), its time and the registers ptxas gave it."""
    sweep = []
    for name, (n, k) in LAYER.items():
        weights = [random_int4_layer(n, k, 128, "cuda") for _ in range(SETS)]
        args = _fused_args(name, n, k, SETS)
        planned = w4a16_gemv.plan(n, k, 128)
        row = {"shape": f"{name} {n}x{k}", "variant": "/".join(map(str, FUSED[name])), "plan": str(planned),
               "tiles": {}, "regs": {}}
        prologue, residual = FUSED[name]
        for tile in dict.fromkeys([planned] + INT4_FUSED_TILES):
            row.setdefault("errors", {})[str(tile)] = w4a16_gemv.check(n, k, 128, tile=tile, prologue=prologue,
                                                                      residual=residual)
            row["tiles"][str(tile)] = _fused_int4_us(name, weights, args, tile)
            kernel = w4a16_gemv.make_kernel(*tile, prologue, residual)
            row["regs"][str(tile)] = max(kernel.get_regs_per_thread().values())
        best = min(row["tiles"], key=row["tiles"].get)
        row.update(best_tile=best, best_us=row["tiles"][best], plan_us=row["tiles"][str(planned)])
        sweep.append(row)
        measure.log(f"int4 bounds sweep {row}")
        del weights, args
        measure.free_memory()
        result["int4_sweep"] = sweep
        save()


def gemv_tail(result: dict, save) -> None:
    """What the end of each fused int4 GEMV of the decode step costs, at its plan: the kernels as
    built, then with one piece left out (timing only: the outputs are wrong) - the split-K tail
    (labkit.kernels.splitk: each block writes its partial sums and stops), the RMSNorm's sum of
    squares over the row (q/k/v and gate/up).
    The kernels are recompiled for each variant; "as built" comes first and last. Then the
    kernels as built are checked on 25 fresh inputs a shape."""
    from numba import cuda, float32

    from labkit.kernels import splitk

    @cuda.jit(device=True, inline="always")
    def never(counters, tile, splits):
        return False

    @cuda.jit(device=True, inline="always")
    def no_squares(x, k, tid, nthreads, after):
        return float32(k)

    built = {(splitk, "last_to_arrive"): splitk.last_to_arrive,
             (w4a16_gemv, "sum_of_squares"): w4a16_gemv.sum_of_squares}
    variants = {"as built": {}, "no split-K tail": {(splitk, "last_to_arrive"): never},
                "no sum of squares": {(w4a16_gemv, "sum_of_squares"): no_squares}, "as built, again": {}}
    layers = {name: ([random_int4_layer(n, k, 128, "cuda") for _ in range(SETS)], _fused_args(name, n, k, SETS))
              for name, (n, k) in LAYER.items()}
    rows = {}
    for variant, patch in variants.items():
        for (module, attr), fn in {**built, **patch}.items():
            setattr(module, attr, fn)
        w4a16_gemv.make_kernel.cache_clear()
        for name, (weights, args) in layers.items():
            n, k = LAYER[name]
            planned = w4a16_gemv.plan(n, k, 128)
            _, ty, rounds, *_ = planned
            row = rows.setdefault(name, {"plan": str(planned), "splits": -(-k // (8 * rounds * ty))})
            row[variant] = _fused_int4_us(name, weights, args)
        measure.log(f"gemv tail {variant}: {rows}")
    for (module, attr), fn in built.items():
        setattr(module, attr, fn)
    w4a16_gemv.make_kernel.cache_clear()
    result["gemv_tail"] = rows
    result["gemv_tail_checks"] = fused_checks_25()   # the kernels as built
    save()


def fused_checks_25() -> list[dict]:
    """Each fused int4 GEMV of the decode step at its plan, checked on 25 fresh inputs: a missing
    fence or a wrong read in a split-K tail shows as a rare wrong sum."""
    checks = []
    run = _checker(checks)
    for name, (n, k) in LAYER.items():
        prologue, residual = FUSED[name]
        run(f"fused {name} x 25", lambda: max(w4a16_gemv.check(n, k, 128, tile=None, prologue=prologue,
                                                               residual=residual, seed=s) for s in range(25)))
    return checks


GEMV_PLAN = w4a16_gemv.plan   # (gemv_plan swaps w4a16_gemv.plan for previous_gemv_plan and back)


def previous_gemv_plan(n: int, k: int, group_size: int) -> tuple[int, ...]:
    """w4a16_gemv.plan before 4-byte loads: 16-byte loads (and 3 register stages) on every layer."""
    tx, ty, rounds, depth, min_blocks, width = GEMV_PLAN(n, k, group_size)
    return (tx, ty, rounds, depth, min_blocks, width) if width == 4 else (4, 32, rounds, 3, min_blocks, 4)


def int4_engines_ab(copy_gbps: float, tokenizer: str | None, out: dict, save, variants: dict) -> None:
    """Compiled batch-1 engines, fp16 fused and int4 fused; the int4 one's graphs re-captured under
    each of `variants` (tag: a function that sets it up) in alternating rounds, three rounds: ms per
    step, and each variant's kernels per step (the profile, first round). The last variant stays set."""
    from labkit.engine import LLM
    from labkit.engine.bench import decode_weight_bytes, random_model
    from labkit.engine.fuse import set_fused_decode
    from labkit.models import Tokenizer, resolve

    tok = Tokenizer(tokenizer or resolve("embedded"))
    rng, vocab = random.Random(0), 32000
    llms = {}
    for name, weights in (("fp16 fused", None), ("int4 fused", "int4")):
        set_fused_decode(True)
        torch.manual_seed(0)
        llms[name] = LLM(random_model("llama-2-7b", "cuda", torch.float16), tokenizer=tok, backend="numba",
                         weights=weights, compile=True, max_batch_size=1, max_model_len=1024,
                         cache_max_entry_count=0.1)
        set_fused_decode(False)
        decode_ms(llms[name], 1, rng, vocab, steps=8)
        out[f"{name}, roofline_ms"] = round(decode_weight_bytes(llms[name].model) / (copy_gbps * 1e9) * 1e3, 3)
    runner = llms["int4 fused"].engine.runner
    for round_ in range(3):
        for tag, set_up in variants.items():
            set_up()
            runner.graphs.clear()
            runner.capture_graphs(1)
            out.setdefault(f"int4 fused, {tag}", []).append(decode_ms(llms["int4 fused"], 1, rng, vocab))
            if round_ == 0:
                out[f"int4 fused, {tag}, timeline"] = step_timeline(llms["int4 fused"], vocab)
        out.setdefault("fp16 fused", []).append(decode_ms(llms["fp16 fused"], 1, rng, vocab))
        measure.log(f"int4 engines {out}")
        save()
    out["fp16 fused, timeline"] = step_timeline(llms["fp16 fused"], vocab)
    close_engines(llms)
    save()


def gemv_plan_engines(copy_gbps: float, tokenizer: str | None, out_dir: str, result: dict, save) -> None:
    """The GPU-only tests of the fused decode layers, then compiled batch-1 engines, int4 fused
    (graphs re-captured with the previous and the current GEMV plan in alternating rounds) and
    fp16 fused: ms per step and each one's kernels per step."""
    result["plan_tests"] = gpu_tests(FUSED_TESTS, Path(out_dir, "plan_tests.log"))
    save()
    plans = {"previous plan": previous_gemv_plan, "plan": GEMV_PLAN}
    int4_engines_ab(copy_gbps, tokenizer, result.setdefault("plan_engines", {}), save,
                    {tag: lambda plan=plan: setattr(w4a16_gemv, "plan", plan) for tag, plan in plans.items()})


def three_stage_plan(n: int, k: int, group_size: int) -> tuple[int, ...]:
    """w4a16_gemv.plan with 3 register stages for 4-byte loads too (before: all rounds in flight)."""
    tile = GEMV_PLAN(n, k, group_size)
    return tile[:3] + (3,) + tile[4:]


#: gemv_ends variants: (splits the tail reads at a time, plan); the first is the code before, the last as committed
GEMV_ENDS = {"before (4 reads, 3 stages)": (4, three_stage_plan), "8 reads": (8, three_stage_plan),
             "8 reads, all rounds in flight": (8, GEMV_PLAN)}
ENDS_TESTS = [str(ROOT / t) for t in (
    "tests/kernels/test_fused_gemv.py", "tests/kernels/test_overlap.py", "tests/engine/test_fused_decode_gpu.py",
    "tests/engine/test_cuda_graphs_gpu.py", "tests/kernels/test_linear_kernels.py", "tests/kernels/test_attention.py")]


MAKE_GEMV = w4a16_gemv.make_kernel   # (gemv_ends gives each variant its own cache of kernels, then restores it)
_end_kernels: dict = {}


def _set_gemv_end(reads: int, plan) -> None:
    """The GEMVs launched from now on: the split-K tail reading `reads` splits at a time, under
    `plan`; each variant's kernels are compiled once, on first use (while it is set)."""
    from labkit.kernels import splitk

    splitk.sum_partials, w4a16_gemv.plan = splitk.partial_adder(reads), plan
    w4a16_gemv.make_kernel = _end_kernels.setdefault((reads, plan), functools.lru_cache(None)(MAKE_GEMV.__wrapped__))


def gemv_ends(copy_gbps: float, tokenizer: str | None, out_dir: str, result: dict, save) -> None:
    """The end of the fused int4 GEMVs: the split-K tail's last block reading 4 or 8 splits at a
    time, and 4-byte-load tiles (o) with 3 register stages or all rounds in flight. Each fused
    GEMV under GEMV_ENDS (twice, alternating); 25 fresh checks a shape as committed; compiled
    batch-1 engines before / after; then the GPU-only tests of every kernel with a split-K tail
    and of the fused layers."""
    layers = {name: ([random_int4_layer(n, k, 128, "cuda") for _ in range(SETS)], _fused_args(name, n, k, SETS))
              for name, (n, k) in LAYER.items()}
    rows = result.setdefault("gemv_ends", {})
    for rep in range(2):
        for tag, (reads, plan) in GEMV_ENDS.items():
            _set_gemv_end(reads, plan)
            for name, (weights, args) in layers.items():
                row = rows.setdefault(name, {"plan": str(w4a16_gemv.plan(*LAYER[name], 128))})
                row.setdefault(tag, []).append(_fused_int4_us(name, weights, args))
            measure.log(f"gemv ends {tag}: {rows}")
    del layers
    measure.free_memory()
    save()
    result["gemv_ends_checks"] = fused_checks_25()   # (the last variant is the committed code)
    save()
    before, committed = list(GEMV_ENDS)[0], list(GEMV_ENDS)[-1]
    ends = {tag: lambda v=GEMV_ENDS[tag]: _set_gemv_end(*v) for tag in (before, committed)}
    int4_engines_ab(copy_gbps, tokenizer, result.setdefault("ends_engines", {}), save, ends)
    w4a16_gemv.make_kernel = MAKE_GEMV
    result["ends_tests"] = gpu_tests(ENDS_TESTS, Path(out_dir, "ends_tests.log"))
    save()


OVERLAP_TESTS = [str(ROOT / t) for t in (
    "tests/kernels/test_overlap.py", "tests/kernels/test_attention.py", "tests/engine/test_cuda_graphs_gpu.py",
    "tests/engine/test_fused_decode_gpu.py")]


def overlap_part(tokenizer: str | None, batches: tuple[int, ...], result: dict, save) -> None:
    """A layer's four fused GEMVs (int4, fp16) with overlap off and on, then compiled engines
    (fp16 fused, int4 fused) with their graphs re-captured with overlap off and on: ms per step
    at `batches` in alternating rounds, and the batch-1 profile of each."""
    from labkit.engine import LLM
    from labkit.engine.bench import random_model
    from labkit.kernels import f16_gemv
    from labkit.models import Tokenizer, resolve

    chains = {}   # a layer's four fused GEMVs (8 layers' worth per graph), int4 and fp16
    for fmt in ("int4", "fp16"):
        args = {name: _fused_args(name, n, k, SETS) for name, (n, k) in LAYER.items()}
        if fmt == "int4":
            weights = {name: [random_int4_layer(n, k, 128, "cuda") for _ in range(SETS)] for name, (n, k) in LAYER.items()}
            gemv = lambda a, w: w4a16_gemv.w4a16_gemv(a["x"], *w, 128, prologue=a["prologue"],  # noqa: E731
                                                      norm=a["norm"], residual=a["residual"])
        else:
            weights = {name: [torch.randn(n, k, device="cuda").half() * 0.02 for _ in range(SETS)]
                       for name, (n, k) in LAYER.items()}
            gemv = lambda a, w: f16_gemv.f16_gemv(a["x"], w, prologue=a["prologue"], norm=a["norm"],  # noqa: E731
                                                  residual=a["residual"])
        row = {}
        for overlap in (False, True, False, True):
            launch.set_overlap(overlap)
            row.setdefault("overlap" if overlap else "plain", []).append(round(measure.time_us(
                lambda i: [gemv(args[name][i], weights[name][i]) for name in LAYER], SETS, calls=8), 2))
        launch.set_overlap(False)
        chains[fmt] = row
        measure.log(f"overlap chain {fmt}: {row}")
        del weights, args
        measure.free_memory()
    result["overlap_chains"] = chains
    save()
    tok = Tokenizer(tokenizer or resolve("embedded"))
    rng, vocab, out, llms = random.Random(0), 32000, {}, {}
    for name, weights in (("fp16 fused", None), ("int4 fused", "int4")):
        launch.set_overlap(False)
        llms[name] = LLM(random_model("llama-2-7b", "cuda", torch.float16), tokenizer=tok, backend="numba",
                         weights=weights, compile=True, max_batch_size=max(batches), max_model_len=1024,
                         cache_max_entry_count=0.1)
        decode_ms(llms[name], 1, rng, vocab, steps=8)   # warm up
        out[name] = {}
    for _ in range(3):   # alternating rounds: each engine, overlap off and on
        for name, llm in llms.items():
            for overlap in (False, True):
                launch.set_overlap(overlap)
                llm.engine.runner.graphs.clear()
                llm.engine.runner.capture_graphs(max(batches))
                for b in batches:
                    out[name].setdefault(f"B={b} {'overlap' if overlap else 'plain'}", []).append(
                        decode_ms(llm, b, rng, vocab))
            measure.log(f"overlap {name}: {out[name]}")
            result["overlap"] = out
            save()
    for name, llm in llms.items():
        for overlap in (False, True):
            launch.set_overlap(overlap)
            llm.engine.runner.graphs.clear()
            llm.engine.runner.capture_graphs(1)
            out[name][f"timeline {'overlap' if overlap else 'plain'}"] = step_timeline(llm, vocab)
    launch.set_overlap(False)
    close_engines(llms)
    result["overlap"] = out
    save()


def check_line(c: dict, width: int) -> str:
    return f"check {c['check']:<{width}} {'ok ' + str(c.get('value')) if c['ok'] else 'FAILED ' + c['message']}"


def tests_line(name: str, tests: dict) -> str:
    return f"{name} GPU tests: {'passed' if tests['ok'] else 'FAILED'} {tests['tail'][-200:]!r}"


def table(result: dict) -> str:
    lines = [f"{result['device']} · copy {result['copy_gbps']:.0f} GB/s · {result['date']}"]
    lines += [check_line(c, 70) for c in result.get("checks", [])]
    for r in result.get("kernels", []):
        lines.append(f"{r['kernel']:<20} {r['shape']:<36} plain {r['plain_us']:>7.2f} us  overlap {r['overlap_us']:>7.2f} us"
                     + (f"  ({100 * r['copy_frac_overlap']:.0f}% copy)" if "copy_frac_overlap" in r else ""))
    lines += [check_line(c, 40) for c in result.get("tc", {}).get("checks", [])]
    if "tests" in result.get("tc", {}):
        lines.append(tests_line("tc", result["tc"]["tests"]))
    for r in result.get("rows", []):
        lines.append(f"M={r['m']:<3} layer linears: int4 {r['int4_total']:>7.1f} us  fp16 {r['fp16_total']:>7.1f} us  "
                     f"int4/fp16 {r['int4_total'] / r['fp16_total']:.2f}  tc {r.get('tc_total', '-')} us  "
                     f"tc_async {r.get('tc_async_total', '-')} us  {json.dumps(r['choice'])}")
        for name in r["int4"]:
            kernels = [f"tc {r['tc'][name]['us']}"] if name in r["tc"] else []
            kernels += [f"tc_async {v['tile']} {v['us']} ({v['regs']} regs)" for v in r["tc_async"].get(name, [])]
            kernels += [f"gemm {r['gemm'][name]}"] if name in r["gemm"] else []
            lines.append(f"  {name:<8} fp16 {r['fp16'][name]:>6.2f}  int4 {r['int4'][name]:>6.2f}  "
                         + "  ".join(kernels))
    for r in result.get("bench", {}).get("static", []):
        lines.append(f"bench engine {json.dumps(r)}")
    lines += [check_line(c, 50) for c in result.get("fused_checks", [])]
    if "fused_tests" in result:
        lines.append(tests_line("fused", result["fused_tests"]))
    for r in result.get("fused_kernels", []):
        lines.append(f"fused kernels {json.dumps(r)}")
    for name, e in result.get("fused_engine", {}).items():
        lines.append(f"fused engine {name}: {json.dumps(e)[:600]}")
    lines += [check_line(c, 60) for c in result.get("rope_checks", [])]
    if "rope_tests" in result:
        lines.append(tests_line("rope", result["rope_tests"]))
    for r in result.get("rope_kernels", []):
        lines.append(f"rope kernels {json.dumps(r)}")
    for name, e in result.get("rope_engine", {}).items():
        t = e["timeline"]
        lines.append(f"rope engine {name:<22} ms/step {e['ms_per_step_b1']}  {e['batch1_tok_s']} tok/s = "
                     f"{100 * e['batch1_fraction_of_roofline']:.1f}% of roofline; {t['kernels_per_step']} kernels/step, "
                     f"{t['total_us_per_step']} us of kernels, gap median {t['gap_us_median']} us")
    lines += [check_line(c, 50) for c in result.get("f16_checks", [])]
    if "f16_tests" in result:
        lines.append(tests_line("f16", result["f16_tests"]))
    for r in result.get("f16_sweep", []):
        lines.append(f"f16 {r['shape']:<20} cuBLAS {r['cublas_us']:>6.2f} us ({100 * r['cublas_copy_frac']:.0f}% copy)  "
                     f"best {r['best_tile']} {r['best_us']:>6.2f} us ({100 * r['best_copy_frac']:.0f}%)  "
                     f"plan {r['planned_us']} us")
        lines.append("    " + json.dumps({k: v for k, v in r.items() if k.startswith("fused")}))
    if "f16_engine_tests" in result:
        lines.append(tests_line("fused decode (fp16, int4)", result["f16_engine_tests"]))
    for name, e in result.get("f16_engine", {}).items():
        t = e["timeline"]
        lines.append(f"f16 engine {name:<12} ms/step {e['ms_per_step_b1']}  {e['batch1_tok_s']} tok/s = "
                     f"{100 * e['batch1_fraction_of_roofline']:.1f}% of roofline; {t['kernels_per_step']} kernels/step, "
                     f"{t['total_us_per_step']} us of kernels, gap median {t['gap_us_median']} us"
                     + (f"; tokens = unfused: {e['tokens_equal_unfused']}" if "tokens_equal_unfused" in e else ""))
    for name, e in result.get("prefill", {}).items():
        lines.append(f"prefill {name:<18} first token of 128 (ms): {e}")
    if "overlap_tests" in result:
        lines.append(tests_line("overlap (overlap, attention, graphs, fused decode)", result["overlap_tests"]))
    for fmt, row in result.get("overlap_chains", {}).items():
        lines.append(f"overlap: a layer's four fused GEMVs, {fmt}, us: {json.dumps(row)}")
    for name, e in result.get("overlap", {}).items():
        lines.append(f"overlap {name}, ms/step: " + json.dumps({k: v for k, v in e.items() if k.startswith("B=")}))
        for k in ("timeline plain", "timeline overlap"):
            if k in e:
                t = e[k]
                lines.append(f"  {k:<17} {t['kernels_per_step']} kernels/step, {t['total_us_per_step']} us of kernels, "
                             f"gap median {t['gap_us_median']} us, wall {t['wall_ms_per_step']} ms")
    for name, e in result.get("load", {}).items():
        lines.append(f"load {name}: {json.dumps(e)[:700]}")
    for w, e in result.get("engine", {}).items():
        lines.append(f"engine {w}: ms/step {json.dumps(e['ms_per_step'])}; batch 1 {e['batch1_tok_s']} tok/s = "
                     f"{100 * e['batch1_fraction_of_roofline']:.1f}% of the roofline ({e['roofline_ms']} ms)")
        lines.append(f"  overlap A/B {json.dumps(e['overlap_ab'])}")
        for k in ("timeline_plain", "timeline_overlap"):
            t = e[k]
            lines.append(f"  {k}: {t['kernels_per_step']} kernels/step, {t['total_us_per_step']} us of kernels, "
                         f"gap median {t['gap_us_median']} us mean {t['gap_us_mean']} us, wall {t['wall_ms_per_step']} ms")
    for name, row in result.get("gemv_ends", {}).items():
        lines.append(f"gemv ends {name:<8} {json.dumps(row)}")
    lines += [check_line(c, 40) for c in result.get("gemv_ends_checks", [])]
    for key in ("plan_engines", "ends_engines"):
        for name, e in result.get(key, {}).items():
            lines.append(f"{key} {name}: " + (f"{e['kernels_per_step']} kernels/step, {e['total_us_per_step']} us of "
                                              f"kernels, gap median {e['gap_us_median']} us" if isinstance(e, dict)
                                              else json.dumps(e)))
    if "ends_tests" in result:
        lines.append(tests_line("ends", result["ends_tests"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--tokenizer", default=None, help="folder with tokenizer.json (default: the embedded model's)")
    p.add_argument("--parts", default="checks,kernels,engine,rows")
    p.add_argument("--requests", type=int, default=200, help="load: requests of the chat workload")
    p.add_argument("--batches", default="1,4,16", help="overlap: the batch sizes of the engines")
    args = p.parse_args(argv)
    parts = args.parts.split(",")
    batches = tuple(int(b) for b in args.batches.split(","))
    result: dict = {"device": torch.cuda.get_device_name(), "date": time.strftime("%Y-%m-%d"),
                    "torch": torch.__version__, "overlap_enabled": None,
                    "copy_gbps": round(measure.copy_bandwidth(), 1)}
    result["overlap_enabled"] = launch.overlap_enabled()
    path = Path(args.out) / "gpu_decode.json"
    path.parent.mkdir(parents=True, exist_ok=True)   # (every part writes under it)

    def save() -> None:
        path.write_text(json.dumps(result, indent=1))

    for part, fn in (("checks", lambda: checks(args.tokenizer)), ("kernels", lambda: kernel_rows(result["copy_gbps"])),
                     ("engine", lambda: engine_rows(result["copy_gbps"], args.tokenizer)),
                     ("tc", lambda: tc_checks(args.out)),
                     ("rows", batch_rows), ("bench", lambda: engine_bench(args.tokenizer, args.out)),
                     ("fused", lambda: fused_part(result["copy_gbps"], args.tokenizer, args.out, result, save)),
                     ("rope", lambda: rope_part(result["copy_gbps"], args.out, result, save)),
                     ("rope_engine", lambda: rope_engines(result["copy_gbps"], args.tokenizer)),
                     ("load", lambda: load_engines(result["copy_gbps"], args.tokenizer, args.requests)),
                     ("f16", lambda: f16_part(result["copy_gbps"], args.out, result, save)),
                     ("overlap_tests", lambda: gpu_tests(OVERLAP_TESTS, Path(args.out, "overlap_tests.log"))),
                     ("overlap", lambda: overlap_part(args.tokenizer, batches, result, save)),
                     ("prefill", lambda: prefill_engines(args.tokenizer)),
                     ("f16_engine", lambda: f16_engines(result["copy_gbps"], args.tokenizer, args.out, result, save)),
                     ("int4_scaling", lambda: int4_scaling(result["copy_gbps"], result, save)),
                     ("int4_sweep", lambda: int4_sweep(result, save)),
                     ("gemv_tail", lambda: gemv_tail(result, save)),
                     ("gemv_plan", lambda: gemv_plan_engines(result["copy_gbps"], args.tokenizer, args.out, result,
                                                             save)),
                     ("gemv_ends", lambda: gemv_ends(result["copy_gbps"], args.tokenizer, args.out, result, save))):
        if part in parts:
            start = time.time()
            value = fn()
            if value is not None:   # (the fused part files its results into `result` as it goes)
                result[part] = value
            result[f"{part}_s"] = round(time.time() - start, 1)
            save()
    print(table(result))
    ok = all(c["ok"] for c in result.get("checks", []) + result.get("tc", {}).get("checks", [])
             + result.get("fused_checks", []) + result.get("rope_checks", []) + result.get("f16_checks", [])
             + result.get("gemv_tail_checks", []) + result.get("gemv_ends_checks", []))
    tests = [result.get(k, {}) for k in ("fused_tests", "rope_tests", "f16_tests", "f16_engine_tests", "overlap_tests",
                                         "ends_tests")] + [result.get("tc", {}).get("tests", {})]
    return 0 if ok and all(t.get("ok", True) for t in tests) else 1


if __name__ == "__main__":
    sys.exit(main())
