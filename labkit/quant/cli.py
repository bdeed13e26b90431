"""`labkit lite auto_awq|rtn|smooth_quant MODEL --work-dir DIR [...]` (LMDeploy's names).

Each writes a quantized checkpoint folder (see `labkit.quant.checkpoint`) that every MODEL
argument accepts: `labkit eval DIR`, `labkit chat DIR`, `labkit.load_model(DIR)`.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from labkit.clitools import add_json_argument, add_model_argument, emit, progress

METHODS = {
    "auto_awq": "AWQ W4A16: activation-aware scales searched on calibration text, then int4 RTN",
    "rtn": "round-to-nearest weight-only W4A16 or W8A16 (no calibration)",
    "smooth_quant": "SmoothQuant W8A8: migrate activation outliers into weights, int8 x int8 matmuls",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="method", required=True, metavar="METHOD")
    for name, help_ in METHODS.items():
        s = sub.add_parser(name, help=help_, description=help_)
        add_model_argument(s)
        s.add_argument("--work-dir", required=True, metavar="DIR", help="where to write the quantized checkpoint")
        s.add_argument("--force", action="store_true", help="replace DIR if it exists and is not empty")
        if name != "smooth_quant":
            s.add_argument("--w-bits", type=int, default=4, choices=[4] if name == "auto_awq" else [4, 8],
                           help="weight bits (default 4)")
            s.add_argument("--w-group-size", type=int, default=128,
                           help="input channels per scale; -1 for per-channel (default 128)")
        if name != "rtn":
            s.add_argument("--calib-dataset", default=None, metavar="NAME",
                           help="wikitext2 | c4 | pileval through `datasets` (online); default: labkit's calibration text")
            s.add_argument("--calib-samples", type=int, default=4, help="calibration windows (default 4)")
            s.add_argument("--calib-seqlen", type=int, default=512, help="tokens per window (default 512)")
        if name == "auto_awq":
            s.add_argument("--no-clip", action="store_true", help="skip the weight clipping search")
            s.add_argument("--search-grid", type=int, default=20, help="alpha grid points per layer group (default 20)")
        if name == "smooth_quant":
            s.add_argument("--alpha", type=float, default=0.5, help="migration strength in [0, 1] (default 0.5)")
        add_json_argument(s)


def source_name(spec: str) -> str:
    """What config.json records as the source: an absolute path for a folder, else the spec."""
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def run(args) -> int:
    from labkit.errors import UserError
    from labkit.models import load
    from labkit.models.loader import read_config, resolve
    from labkit.quant import awq, smoothquant
    from labkit.quant.calib import check_architecture, dataset_text
    from labkit.quant.checkpoint import prepare_work_dir, quantization_config, save_quantized
    from labkit.quant.qlinear import QuantLinear, check_model, quantize_linears, weight_bytes

    out = Path(args.work_dir).expanduser()
    prepare_work_dir(out, args.force)  # before minutes of work, not after
    if args.method != "rtn" and (args.calib_samples < 1 or args.calib_seqlen < 16):
        raise UserError("--calib-samples must be >= 1 and --calib-seqlen >= 16")
    if args.method == "auto_awq" and args.search_grid < 1:
        raise UserError("--search-grid must be >= 1")
    start = time.perf_counter()
    source = resolve(args.model)
    if "quantization_config" in read_config(source):
        raise UserError(f"{source} is already quantized: quantize a full-precision model")
    model, tokenizer = load(str(source))   # float32 on the CPU (labkit.loading sits above quant)
    check_architecture(model)
    bar = lambda it: progress(it, f"{args.method} layers", not args.json)
    try:
        if args.method == "smooth_quant":
            check_model(model.config, 8, -1, act_bits=8)
        else:
            check_model(model.config, args.w_bits, args.w_group_size)
        text = dataset_text(args.calib_dataset) if getattr(args, "calib_dataset", None) else None
        if args.method == "rtn":
            quantize_linears(model, args.w_bits, args.w_group_size, progress=bar)
        elif args.method == "auto_awq":
            awq.awq_quantize(model, tokenizer, text, args.w_bits, args.w_group_size, n_grid=args.search_grid,
                             clip=not args.no_clip, n_samples=args.calib_samples, seqlen=args.calib_seqlen,
                             progress=bar)
        else:
            smoothquant.smoothquant_w8a8(model, tokenizer, text, args.alpha, args.calib_samples, args.calib_seqlen,
                                         progress=bar)
    except ValueError as e:
        raise UserError(str(e)) from e
    padded = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                     if isinstance(m, QuantLinear) and m.padded_in != m.in_features})
    if padded and not args.json:
        print(f"note: group size does not divide the input of {', '.join(padded)}: inputs zero-padded to a multiple "
              "of it (labkit reads this checkpoint; other AWQ engines need a group size that divides every layer)",
              file=sys.stderr)
    save_quantized(model, out, source_name(args.model), source, args.method, args.force,
                   {"padded_layers": padded} if padded else None)
    result = {"work_dir": str(out), "method": args.method, "source": source_name(args.model),
              "quantization_config": quantization_config(model), "weight_bytes": weight_bytes(model),
              "padded_layers": padded, "seconds": round(time.perf_counter() - start, 1)}
    emit(result, args.json, f"wrote {out} ({args.method}, {result['quantization_config']}, "
                            f"weights {result['weight_bytes'] / 2**20:.1f} MiB) in {result['seconds']} s")
    return 0
