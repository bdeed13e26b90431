"""`labkit eval [MODEL] [--reference MODEL] [--quant-policy 0|4|8] [--json]`."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from labkit.clitools import add_json_argument, add_model_argument, emit, progress


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_argument(p)
    p.add_argument("--reference", metavar="MODEL", default=None,
                   help="compare against this model (default: the model a quantized checkpoint came from; 'none' to skip)")
    p.add_argument("--window", type=int, default=512, help="tokens per evaluation window (default 512)")
    p.add_argument("--max-tokens", type=int, default=None, help="evaluate only the first N tokens")
    p.add_argument("--quant-policy", type=int, default=0, choices=[0, 4, 8],
                   help="KV cache: 0 float (default), 8 int8, 4 int4 (per token and head, as LMDeploy's); "
                        "without --reference, compares against the same model with a float cache")
    p.add_argument("--device", default="cpu")
    add_json_argument(p)


def default_reference(spec: str) -> str | None:
    """A labkit checkpoint records the model it was made from; that is the natural reference."""
    config = Path(spec) / "config.json"
    if spec != "embedded" and config.is_file():
        return json.loads(config.read_text()).get("labkit", {}).get("source")
    return None


def run(args) -> int:
    from labkit.engine.weights import convert
    from labkit.errors import UserError
    from labkit.eval import eval_text, evaluate
    from labkit.loading import load_model

    if args.window < 2 or (args.max_tokens is not None and args.max_tokens < 1):
        raise UserError("--window must be >= 2 and --max-tokens >= 1")
    ref_spec = default_reference(args.model) if args.reference is None else args.reference
    if args.reference is None and args.quant_policy and ref_spec is None:
        ref_spec = args.model  # a KV policy is measured against the same weights with a float cache
    ref_spec = None if ref_spec in (None, "none") else ref_spec
    start = time.perf_counter()
    model, tokenizer = load_model(args.model, device=args.device)
    convert(model, None, tokenizer=tokenizer)   # a quantized checkpoint on a CPU runs as it is served
    reference = model if ref_spec == args.model else load_model(ref_spec, device=args.device)[0] if ref_spec else None
    cache = None
    if args.quant_policy:
        from labkit.quant.kv import FakeQuantKV

        cache = FakeQuantKV(args.quant_policy)
    ids = tokenizer.encode(eval_text())
    result = evaluate(model, ids, reference, window=args.window, max_tokens=args.max_tokens,
                      progress=lambda it: progress(it, "eval", not args.json), cache=cache)
    out = {"model": args.model, "reference": ref_spec, "quant_policy": args.quant_policy, **result.to_dict(),
           "seconds": round(time.perf_counter() - start, 2)}
    table = f"model {args.model}: {result.tokens} tokens, perplexity {result.ppl:.4f}"
    if reference is not None:
        table += f"\nagainst {ref_spec}: KL {result.kl:.6f}, top-1 agreement {result.top1:.2%}"
    emit(out, args.json, table)
    return 0
