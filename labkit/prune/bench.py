"""`labkit bench prune [--only quality compose speed sparse24] [--json]`: what pruning costs and buys.

- `quality` (the embedded model, any CPU): every one-shot method (magnitude, Wanda,
  SparseGPT) at sparsities 0.1-0.7 and at 2:4 and 4:8, depth pruning ranked by block
  influence, by perplexity, and as the last or random layers, and width pruning: perplexity,
  KL and top-1 against the dense model on the evaluation text (the dense logits computed
  once), and the targets met or not.
- `compose`: Wanda 2:4, then AWQ W4 g128, against each step alone.
- `speed` (this CPU): structured variants (fewer layers, narrower layers) against the
  unpruned model in the same run: parameters, weight MiB, batch-1 decode tokens/s through
  the engine's fastest CPU path (`LLM(compile=True)`), in alternating rounds.
- `sparse24` (GPU): 2:4 semi-structured sparse matmuls (`torch.sparse.to_sparse_semi_structured`,
  cuSPARSELt; CUTLASS is tried too) against dense fp16 `F.linear` on Llama-2-7B layer shapes
  over 1 to 8192 tokens (also replayed from a CUDA graph, which separates the host's cost
  from the GPU's), then end to end on a Llama-2-7B-shaped model with random weights:
  prefill, and decode at batch 1 and 64.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import statistics
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F

SPARSITIES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
PATTERNS = ("2:4", "4:8")
ONESHOT = ("magnitude", "wanda", "sparsegpt")
TOKENS = (1, 16, 64, 256, 1024, 4096, 8192)


def gpu_ms(fn: Callable[[], object], calls: int = 20, repeats: int = 5) -> float:
    """Median milliseconds per call of `fn`, from CUDA events around `calls` back-to-back calls,
    launched eagerly (the host's per-call work included, beside `graph_ms`, which leaves it out)."""
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


def graph_ms(fn: Callable[[], object]) -> float | str:
    """Milliseconds per call of `fn` replayed from a CUDA graph (`kernels.measure.time_us`:
    the GPU's time without the host's per-call work), or why it could not be captured."""
    from labkit.kernels.measure import time_us

    try:
        return time_us(lambda i: fn(), sets=1) / 1000
    except Exception as e:
        torch.cuda.synchronize()
        return f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"


def two_four(weight: torch.Tensor) -> torch.Tensor:
    """Magnitude 2:4 pruning (the pattern is what matters for speed, not which weights)."""
    from labkit.prune.masks import magnitude_scores, nm_mask

    return weight * nm_mask(magnitude_scores(weight), 2, 4)


@torch.no_grad()
def sparse24_layers(tokens=TOKENS) -> list[dict]:
    """Per Llama-2-7B linear shape and token count: dense and 2:4 sparse ms, and the ratio."""
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    from labkit.profile.configs import preset

    h, f = preset("Llama-2-7B").hidden_size, preset("Llama-2-7B").intermediate_size
    rows = []
    for name, (out_f, in_f) in {"q/k/v/o_proj": (h, h), "gate/up_proj": (f, h), "down_proj": (h, f)}.items():
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
                    row[f"{backend}_graph_ms"] = graph_ms(lambda: F.linear(x, ws))
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
             f"{'layer':<14}{'tokens':>7}{'dense ms':>10}{'cuSPARSELt ms':>15}{'ratio':>7}{'graph ms':>10}  cutlass"]
    for r in result["layers"]:
        graph = r.get("cusparselt_graph_ms")
        sp = f"{r['cusparselt_ms']:>15.4f}{r['cusparselt_speedup']:>7.2f}" if "cusparselt_ms" in r else \
            f"  {r.get('cusparselt_error', '')[:40]}"
        sp += f"{graph:>10.4f}" if isinstance(graph, float) else f"  {str(graph)[:30]}"
        cut = f"{r['cutlass_ms']:.4f} ms ({r['cutlass_speedup']:.2f}x)" if "cutlass_ms" in r else \
            r.get("cutlass_error", "")[:60]
        lines.append(f"{r['layer']:<14}{r['tokens']:>7}{r['dense_ms']:>10.4f}{sp}  {cut}")
    for r in result.get("end_to_end", []):
        lines.append(f"Llama-2-7B shapes, {r['what']:<16} dense {r['dense_tok_s']:10.1f} tok/s, "
                     f"2:4 {r['sparse24_tok_s']:10.1f} tok/s ({r['speedup']:.2f}x)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- quality (CPU)


def depth_choices(scores: dict[str, torch.Tensor], n: int, seed: int = 0) -> dict[str, list[int]]:
    """Which `n` layers each ranking removes: by each score in `scores`, the last, random ones."""
    from labkit.prune.depth import layers_to_drop

    L = len(next(iter(scores.values())))
    rand = torch.randperm(L, generator=torch.Generator().manual_seed(seed))[:n]
    return {**{rank: layers_to_drop(s, n) for rank, s in scores.items()},
            "last": list(range(L - n, L)), "random": sorted(rand.tolist())}


def width_args(config, name: str) -> dict[str, int]:
    """The widths `prune_width` keeps for a named variant of the tables."""
    H, H_kv, F = config.num_attention_heads, config.num_key_value_heads, config.intermediate_size
    return {"mlp 3/4": {"mlp": round(0.75 * F)},
            "one query head fewer per group": {"heads": H - H_kv},
            "one KV group fewer": {"heads": H - H // H_kv, "kv_heads": H_kv - 1},
            "mlp 1/2, one query head fewer per group": {"mlp": F // 2, "heads": H - H_kv}}[name]


WIDTHS = ("mlp 3/4", "one query head fewer per group", "one KV group fewer")


def quality(model, tokenizer, max_tokens: int | None = 2048, calib_samples: int = 4, methods=ONESHOT,
            settings=(*SPARSITIES, *PATTERNS), depth_ratios=(0.1, 0.2), widths=WIDTHS, log=None) -> dict:
    """The quality rows (see the module docstring) of `model` against itself."""
    from labkit.eval import eval_text, evaluate
    from labkit.prune.depth import block_influence, drop_layers, layers_for_ratio, ppl_increase
    from labkit.prune.oneshot import prune_oneshot
    from labkit.prune.width import prune_width
    from labkit.quant.bench import CachedReference
    from labkit.quant.calib import calibration_ids

    ids = tokenizer.encode(eval_text())
    calib = calibration_ids(tokenizer, None, calib_samples, 512)
    reference = CachedReference(model)
    rows = []

    def add(kind: str, method: str, setting: str, pruned, seconds: float) -> None:
        t0 = time.perf_counter()
        res = evaluate(pruned, ids, reference, max_tokens=max_tokens)
        rows.append({"kind": kind, "method": method, "setting": setting, "tokens": res.tokens, "ppl": res.ppl, "kl": res.kl,
                     "top1": res.top1, "prune_s": round(seconds, 1), "eval_s": round(time.perf_counter() - t0, 1)})
        if log:  # every row in full as it comes: a long run that is stopped keeps what it measured
            log(f"{kind} {method} {setting}: ppl {res.ppl:.3f}, KL {res.kl:.4f}, top-1 {res.top1:.2%}  "
                f"{json.dumps(rows[-1])}")

    add("dense", "dense", "-", model, 0.0)
    for method in methods:
        for setting in settings:
            pruned, t0 = copy.deepcopy(model), time.perf_counter()
            pattern = setting if isinstance(setting, str) else None
            prune_oneshot(pruned, calib, method, None if pattern else setting, pattern)
            add("oneshot", method, str(setting), pruned, time.perf_counter() - t0)
    t0 = time.perf_counter()
    depth_layers = sorted({layers_for_ratio(len(model.model.layers), r) for r in depth_ratios})
    # the perplexity ranking is one forward pass per layer: on the first calibration window only
    scores = {"influence": block_influence(model, calib), "ppl": ppl_increase(model, calib[:1])} if depth_layers else {}
    for n in depth_layers:
        for rank, drop in depth_choices(scores, n).items():
            add("layers", rank, f"{n} of {len(model.model.layers)}", drop_layers(model, drop), time.perf_counter() - t0)
    for name in widths:
        t0 = time.perf_counter()
        pruned, _ = prune_width(model, calib, **width_args(model.config, name))
        add("width", "activation", name, pruned, time.perf_counter() - t0)
    return {"rows": rows, "targets": targets(rows)}


def targets(rows: list[dict]) -> list[dict]:
    """The bar of issue and DESIGN.md, checked against the rows that ran."""
    ppl = {(r["method"], r["setting"]): r["ppl"] for r in rows}
    dense = ppl.get(("dense", "-"))
    out = []
    for setting in ("0.5", "2:4"):
        mag = ppl.get(("magnitude", setting))
        for method in ("wanda", "sparsegpt"):
            if None not in (dense, mag, ppl.get((method, setting))):
                gap, mag_gap = ppl[(method, setting)] - dense, mag - dense
                out.append({"target": f"{method} at {setting} far below magnitude (perplexity increase <= 1/2 of "
                                      "magnitude's)", "met": gap <= 0.5 * mag_gap,
                            "detail": f"{ppl[(method, setting)]:.2f} vs {mag:.2f} (dense {dense:.2f})"})
    if ("sparsegpt", "2:4") in ppl and ("wanda", "2:4") in ppl:
        out.append({"target": "sparsegpt beats wanda at 2:4", "met": ppl[("sparsegpt", "2:4")] < ppl[("wanda", "2:4")],
                    "detail": f"{ppl[('sparsegpt', '2:4')]:.2f} vs {ppl[('wanda', '2:4')]:.2f}"})
    for method in ONESHOT:
        within = [float(r["setting"]) for r in rows if r["method"] == method and ":" not in r["setting"]
                  and r["ppl"] <= 1.1 * dense]
        if any(r["method"] == method for r in rows):
            out.append({"target": f"{method}: largest unstructured sparsity within +10% perplexity",
                        "met": bool(within), "detail": f"{max(within):.1f}" if within else "none of those tried",
                        "sparsity": max(within) if within else None})
    for setting in sorted({r["setting"] for r in rows if r["kind"] == "layers"}):
        by = {r["method"]: r["ppl"] for r in rows if r["kind"] == "layers" and r["setting"] == setting}
        if {"influence", "last", "random"} <= set(by):
            out.append({"target": f"depth {setting} layers: block influence beats the last and random layers",
                        "met": by["influence"] < min(by["last"], by["random"]),
                        "detail": f"influence {by['influence']:.2f}, ppl-ranked {by.get('ppl', float('nan')):.2f}, "
                                  f"last {by['last']:.2f}, random {by['random']:.2f}"})
    return out


def quality_table(result: dict) -> str:
    lines = ["| kind | method | sparsity / setting | perplexity | KL | top-1 |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['kind']} | {r['method']} | {r['setting']} | {r['ppl']:.3f} | {r['kl']:.4f} | {r['top1']:.2%} |")
    lines += ["", *(f"- {'met' if t['met'] else 'NOT MET'}: {t['target']} ({t['detail']})" for t in result["targets"])]
    return "\n".join(lines)


def compose(model, tokenizer, max_tokens: int | None = 2048, calib_samples: int = 4, log=None) -> list[dict]:
    """Prune, then AWQ W4 g128: each step alone and both, against the dense model. AWQ's
    int4 rounding keeps a pruned weight's zeros exactly zero (zero lies inside every group's
    range and maps to its zero point), so the sparsity survives."""
    from labkit.eval import eval_text, evaluate
    from labkit.prune.oneshot import linear_sparsity, prune_oneshot
    from labkit.quant.awq import awq_quantize
    from labkit.quant.bench import CachedReference
    from labkit.quant.calib import calibration_ids
    from labkit.quant.qlinear import weight_bytes

    ids, reference = tokenizer.encode(eval_text()), CachedReference(model)
    calib = calibration_ids(tokenizer, None, calib_samples, 512)
    rows = []
    for name, method, pattern, awq in [("AWQ W4 g128", None, None, True), ("Wanda 2:4", "wanda", "2:4", False),
                                       ("Wanda 2:4, then AWQ W4 g128", "wanda", "2:4", True)]:
        m, t0 = copy.deepcopy(model), time.perf_counter()
        if method:
            prune_oneshot(m, calib, method, pattern=pattern)
        sparsity = linear_sparsity(m)
        if awq:
            awq_quantize(m, tokenizer, None, 4, 128, n_samples=calib_samples)
        res = evaluate(m, ids, reference, max_tokens=max_tokens)
        rows.append({"name": name, "ppl": res.ppl, "kl": res.kl, "top1": res.top1, "linear_sparsity": round(sparsity, 4),
                     "weight_bytes": weight_bytes(m), "seconds": round(time.perf_counter() - t0, 1)})
        if log:
            log(f"compose {name}: ppl {res.ppl:.3f}, KL {res.kl:.4f}")
    return rows


# ---------------------------------------------------------------------------- speed (CPU)


def structured_variants(model, calib: torch.Tensor) -> dict:
    """The variants of the speed table: dense, fewer layers, narrower layers, and unstructured
    50% (dense storage: the control that shows zeros alone save no time)."""
    from labkit.prune.depth import prune_depth
    from labkit.prune.oneshot import prune_oneshot
    from labkit.prune.width import prune_width

    half = copy.deepcopy(model)
    prune_oneshot(half, None, "magnitude", 0.5)
    return {"dense": model, "layers -20%": prune_depth(model, calib, 0.2)[0],
            "mlp 1/2, one query head fewer per group":
                prune_width(model, calib, **width_args(model.config, "mlp 1/2, one query head fewer per group"))[0],
            "unstructured 50% (dense storage)": half}


def speed(variants: dict, tokenizer, prompt: list[int], output_len: int = 32, rounds: int = 3,
          compile: bool = True, log=None) -> list[dict]:
    """Batch-1 decode tokens/s of each variant through the engine, alternating the order each round."""
    from labkit.engine import LLM
    from labkit.engine.workload import engine_static, greedy
    from labkit.models.llama import parameter_count

    llms, rows = {}, {}
    for name, model in variants.items():
        params = parameter_count(model)
        llms[name] = LLM(copy.deepcopy(model), tokenizer=tokenizer, device="cpu", compile=compile, max_batch_size=1,
                         num_blocks=(len(prompt) + output_len) // 16 + 2, max_model_len=len(prompt) + output_len)
        llms[name].generate([prompt], greedy(output_len))  # warm up (and compile each kind of step)
        rows[name] = {"variant": name, "parameters": params, "fp16_mib": round(2 * params / 2**20, 1), "tok_s": []}
        if log:
            log(f"speed: {name} ready")
    names = list(variants)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            step_ms = engine_static(llms[name], 1, [prompt], output_len)["decode_ms_per_step"]
            rows[name]["tok_s"].append(round(1000 / step_ms, 2))
    for llm in llms.values():
        llm.close()
    dense = statistics.median(rows[names[0]]["tok_s"])
    for row in rows.values():
        row["decode_tok_s"] = statistics.median(row["tok_s"])
        row["vs_dense"] = round(row["decode_tok_s"] / dense, 3)
    return list(rows.values())


def speed_table(rows: list[dict]) -> str:
    lines = ["| variant | parameters | weights (fp16) | batch-1 decode tok/s | vs dense |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['parameters'] / 1e6:.1f}M | {r['fp16_mib']} MiB | {r['decode_tok_s']:.1f} | "
                     f"{r['vs_dense']:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from labkit.errors import UserError
    from labkit.loading import load_model

    p = argparse.ArgumentParser(prog="labkit bench prune", description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=["quality", "compose", "speed", "sparse24"], default=None,
                   help="which parts to run (default: quality, compose and speed; sparse24 too on a GPU)")
    p.add_argument("--model", default="embedded", help="the full-precision MODEL to prune (default embedded)")
    p.add_argument("--max-tokens", type=int, default=2048, help="evaluation tokens per row (default 2048)")
    p.add_argument("--methods", nargs="*", choices=ONESHOT, default=list(ONESHOT),
                   help="quality: one-shot methods (none: only the depth and width rows)")
    p.add_argument("--settings", nargs="+", default=[str(x) for x in (*SPARSITIES, *PATTERNS)], metavar="S",
                   help="quality: sparsities and N:M patterns, in the order to run them")
    p.add_argument("--no-structured", action="store_true", help="quality: skip the depth and width rows")
    p.add_argument("--calib-samples", type=int, default=4, help="512-token calibration windows (default 4)")
    p.add_argument("--rounds", type=int, default=3, help="speed: alternating rounds (default 3)")
    p.add_argument("--eager", action="store_true", help="speed: the eager engine instead of the compiled one")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    parts = args.only or ["quality", "compose", "speed"] + ["sparse24"] * torch.cuda.is_available()
    if args.max_tokens < 1 or args.calib_samples < 1 or args.rounds < 1:
        raise UserError("--max-tokens, --calib-samples and --rounds must be >= 1")
    if "sparse24" in parts and not torch.cuda.is_available():
        raise UserError("--only sparse24 needs an NVIDIA GPU (2:4 sparse tensor cores)")
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    start = time.perf_counter()
    result = {"suite": "prune", "date": datetime.date.today().isoformat(), "torch": torch.__version__,
              "command": "labkit bench prune " + " ".join(argv or []),
              "cpu": f"{platform.machine()}, {torch.get_num_threads()} threads"}
    tables = []
    if {"quality", "compose", "speed"} & set(parts):
        model, tokenizer = load_model(args.model)
        result["model"] = args.model
    if "quality" in parts:
        structured = {"depth_ratios": (), "widths": ()} if args.no_structured else {}
        settings = tuple(x if ":" in x else float(x) for x in args.settings)
        result["quality"] = quality(model, tokenizer, args.max_tokens, args.calib_samples, args.methods, settings,
                                    log=log, **structured)
        tables.append(quality_table(result["quality"]))
    if "compose" in parts:
        result["compose"] = compose(model, tokenizer, args.max_tokens, args.calib_samples, log=log)
        tables.append("\n".join(f"{r['name']:34} perplexity {r['ppl']:8.3f}, KL {r['kl']:.4f}, top-1 {r['top1']:.2%}, "
                                f"{r['weight_bytes'] / 2**20:.1f} MiB" for r in result["compose"]))
    if "speed" in parts:
        from labkit.eval import eval_text
        from labkit.quant.calib import calibration_ids

        variants = structured_variants(model, calibration_ids(tokenizer, None, args.calib_samples, 512))
        result["speed"] = speed(variants, tokenizer, tokenizer.encode(eval_text())[:64], rounds=args.rounds,
                                compile=not args.eager, log=log)
        result["speed_engine"] = "LLM(compile=True), fp32, batch 1" if not args.eager else "LLM eager, fp32, batch 1"
        tables.append(speed_table(result["speed"]))
    if "sparse24" in parts:
        result["device"] = torch.cuda.get_device_name()
        result["layers"] = sparse24_layers()
        result["end_to_end"] = sparse24_end_to_end()
        tables.append(sparse24_table(result))
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result) if args.json else "\n\n".join(tables))
    return 0
