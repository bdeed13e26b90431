"""`labkit bench quant [--json] [--max-tokens N] [--rows ...]`: the quantization quality table.

Every variant of the embedded model (or `--model`) against its own full-precision self on
the evaluation text: perplexity, KL divergence and top-1 agreement of the next-token
distributions, weight memory (quantized storage, other weights at float16) and KV-cache
bytes per token (float16 cache, or int8/int4 codes plus a float16 scale and zero per token
and head). Weight variants go through a real checkpoint (written, then loaded by
`load_model`, as `labkit lite ... && labkit eval DIR` would); KV variants use the
fake-quantizing attention cache (`labkit eval --quant-policy`). The reference's logits are
computed once and reused for every row.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

ROWS = {
    "w8_g128": "W8 RTN g128",
    "w4_g128": "W4 RTN g128",
    "awq_w4_g128": "W4 AWQ g128",
    "w4_g32": "W4 RTN g32",
    "w8a8_naive": "W8A8 naive",
    "w8a8_sq": "W8A8 SmoothQuant",
    "kv8": "KV int8",
    "kv4": "KV int4",
    "awq_w4_g128_kv8": "W4 AWQ g128 + KV int8",
}


class CachedReference(nn.Module):
    """The reference model, with its logits remembered per input window."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.lm_head, self.memory = model, model.lm_head, {}

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        key = x.cpu().numpy().tobytes()
        if key not in self.memory:
            self.memory[key] = self.model(x, **kwargs)
        return self.memory[key]


@dataclass
class Context:
    model: nn.Module
    tokenizer: object
    source: str
    calib_samples: int
    awq: nn.Module | None = None  # the AWQ model, made once for its two rows


def _via_checkpoint(ctx: Context, model: nn.Module, method: str) -> nn.Module:
    """Write `model` as a checkpoint and load it back, as `labkit lite` + `labkit eval` do."""
    from labkit.loading import load_model
    from labkit.models.loader import resolve
    from labkit.quant.checkpoint import save_quantized

    with tempfile.TemporaryDirectory(prefix="labkit-bench-") as tmp:
        out = save_quantized(model, Path(tmp) / "ckpt", ctx.source, resolve(ctx.source), method)
        return load_model(str(out))[0]


def _awq(ctx: Context) -> nn.Module:
    from labkit.quant.awq import awq_quantize

    if ctx.awq is None:
        model = copy.deepcopy(ctx.model)
        awq_quantize(model, ctx.tokenizer, None, 4, 128, n_samples=ctx.calib_samples,
                     progress=lambda it: _bar(it, "AWQ layers"))
        ctx.awq = _via_checkpoint(ctx, model, "auto_awq")
    return ctx.awq


def _build(key: str, ctx: Context) -> tuple[nn.Module, int]:
    """(model, KV quant policy) of one row."""
    from labkit.quant import smoothquant
    from labkit.quant.qlinear import quantize_linears

    rtn = {"w8_g128": (8, 128), "w4_g128": (4, 128), "w4_g32": (4, 32)}
    if key in rtn:
        return _via_checkpoint(ctx, quantize_linears(copy.deepcopy(ctx.model), *rtn[key]), "rtn"), 0
    if key == "awq_w4_g128":
        return _awq(ctx), 0
    if key == "awq_w4_g128_kv8":
        return _awq(ctx), 8
    if key == "w8a8_naive":
        return _via_checkpoint(ctx, smoothquant.naive_w8a8(copy.deepcopy(ctx.model)), "rtn"), 0
    if key == "w8a8_sq":
        model = smoothquant.smoothquant_w8a8(copy.deepcopy(ctx.model), ctx.tokenizer, None, 0.5, ctx.calib_samples)
        return _via_checkpoint(ctx, model, "smooth_quant"), 0
    if key in ("kv8", "kv4"):
        return ctx.model, int(key[2:])
    raise KeyError(key)


def _bar(iterable, desc: str):
    from labkit.clitools import progress

    return progress(iterable, desc, sys.stderr.isatty())


def targets(rows: dict[str, dict]) -> list[dict]:
    """The bar from DESIGN.md, checked against the rows that ran."""
    out = []

    def add(name: str, needs: list[str], ok: Callable[[], bool], detail: Callable[[], str]) -> None:
        if all(k in rows for k in needs):
            out.append({"target": name, "met": bool(ok()), "detail": detail()})

    r = rows.get
    add("W8 KL <= 0.002, top-1 >= 97%", ["w8_g128"], lambda: r("w8_g128")["kl"] <= 0.002 and r("w8_g128")["top1"] >= 0.97,
        lambda: f"KL {r('w8_g128')['kl']:.5f}, top-1 {r('w8_g128')['top1']:.2%}")
    add("AWQ W4 g128 KL <= 0.8 x RTN W4 g128", ["awq_w4_g128", "w4_g128"],
        lambda: r("awq_w4_g128")["kl"] <= 0.8 * r("w4_g128")["kl"],
        lambda: f"{r('awq_w4_g128')['kl']:.4f} vs {r('w4_g128')['kl']:.4f} ({r('awq_w4_g128')['kl'] / r('w4_g128')['kl']:.2f}x)")
    add("KV int8 KL <= 0.002", ["kv8"], lambda: r("kv8")["kl"] <= 0.002, lambda: f"KL {r('kv8')['kl']:.5f}")
    add("SmoothQuant clearly better than naive W8A8", ["w8a8_sq", "w8a8_naive"],
        lambda: r("w8a8_sq")["kl"] <= 0.7 * r("w8a8_naive")["kl"],
        lambda: f"KL {r('w8a8_sq')['kl']:.4f} vs {r('w8a8_naive')['kl']:.4f} ({r('w8a8_sq')['kl'] / r('w8a8_naive')['kl']:.2f}x)")
    return out


def markdown(result: dict) -> str:
    lines = ["| variant | perplexity | KL | top-1 | weight memory | KV bytes/token |", "|---|---|---|---|---|---|"]
    for row in result["rows"]:
        kl = "0" if row["kl"] == 0 else f"{row['kl']:.5f}"
        lines.append(f"| {row['name']} | {row['ppl']:.3f} | {kl} | {row['top1']:.2%} | "
                     f"{row['weight_bytes'] / 2**20:.1f} MiB | {row['kv_bytes_per_token']:,} |")
    lines += ["", *(f"- {'met' if t['met'] else 'MISSED'}: {t['target']} ({t['detail']})" for t in result["targets"])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from labkit.clitools import emit
    from labkit.errors import UserError
    from labkit.eval import eval_text, evaluate
    from labkit.loading import load_model
    from labkit.quant.kv import FakeQuantKV, kv_bytes_per_token
    from labkit.quant.qlinear import weight_bytes

    p = argparse.ArgumentParser(prog="labkit bench quant", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="embedded", help="full-precision MODEL to quantize (default embedded)")
    p.add_argument("--max-tokens", type=int, default=None, help="evaluate only the first N tokens (default: all)")
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--calib-samples", type=int, default=4, help="512-token calibration windows for AWQ/SmoothQuant")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of: {', '.join(ROWS)}")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = p.parse_args(argv)
    keys = [k.strip() for k in args.rows.split(",") if k.strip()]
    unknown = [k for k in keys if k not in ROWS]
    if unknown or (args.max_tokens is not None and args.max_tokens < 1):
        raise UserError(f"unknown rows {unknown} (known: {', '.join(ROWS)})" if unknown else "--max-tokens must be >= 1")

    start = time.perf_counter()
    fp, tokenizer = load_model(args.model)
    ctx = Context(fp, tokenizer, args.model, args.calib_samples)
    reference = CachedReference(fp)
    ids = tokenizer.encode(eval_text())
    run = lambda model, cache: evaluate(model, ids, reference, args.window, args.max_tokens,
                                        lambda it: _bar(it, "eval"), cache)
    base = run(fp, None)
    rows = [{"key": "float", "name": "float (fp32 compute, memory at fp16)", "ppl": base.ppl, "kl": 0.0, "top1": 1.0,
             "weight_bytes": weight_bytes(fp), "kv_bytes_per_token": kv_bytes_per_token(fp.config, 0),
             "quantize_s": 0.0, "eval_s": round(time.perf_counter() - start, 1)}]
    for key in keys:
        t0 = time.perf_counter()
        model, policy = _build(key, ctx)
        t1 = time.perf_counter()
        res = run(model, FakeQuantKV(policy) if policy else None)
        rows.append({"key": key, "name": ROWS[key], "ppl": res.ppl, "kl": res.kl, "top1": res.top1,
                     "weight_bytes": weight_bytes(model), "kv_bytes_per_token": kv_bytes_per_token(fp.config, policy),
                     "quantize_s": round(t1 - t0, 1), "eval_s": round(time.perf_counter() - t1, 1)})
        if not args.json:
            print(f"{ROWS[key]}: KL {res.kl:.5f}, top-1 {res.top1:.2%} ({rows[-1]['quantize_s']} + {rows[-1]['eval_s']} s)",
                  file=sys.stderr)
    by_key = {r["key"]: r for r in rows}
    result = {
        "suite": "quant", "model": args.model, "tokens": base.tokens, "window": args.window,
        "calib_samples": args.calib_samples, "date": datetime.date.today().isoformat(),
        "device": f"CPU ({platform.machine()}, {torch.get_num_threads()} threads), torch {torch.__version__}",
        "command": "labkit bench quant " + " ".join(argv or []),
        "seconds": round(time.perf_counter() - start, 1), "rows": rows, "targets": targets(by_key),
    }
    emit(result, args.json, markdown(result))
    return 0
