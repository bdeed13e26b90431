"""`labkit prune MODEL --method METHOD --work-dir DIR [...]`: write a pruned checkpoint folder.

    --method layers  --ratio R [--rank influence|ppl]     remove whole decoder blocks
    --method width   [--mlp F] [--heads H] [--kv-heads K] [--hidden D]
                                                          narrower layers, the same in every layer
    --method magnitude|wanda|sparsegpt  --sparsity S | --pattern N:M
                                                          zero weights (dense tensors, exact zeros)

The folder (see `labkit.prune.checkpoint`) is accepted by every MODEL argument: `labkit eval
DIR` compares it against its source, `labkit lite auto_awq DIR` quantizes it.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from labkit.clitools import add_json_argument, add_model_argument, emit, progress

ONESHOT = ("magnitude", "wanda", "sparsegpt")
METHODS = ("layers", "width", *ONESHOT)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_argument(p)
    p.add_argument("--method", required=True, choices=METHODS, help="what to remove")
    p.add_argument("--work-dir", required=True, metavar="DIR", help="where to write the pruned checkpoint")
    p.add_argument("--force", action="store_true", help="replace DIR if it exists and is not empty")
    p.add_argument("--ratio", type=float, default=None, help="layers: the fraction of decoder blocks to remove")
    p.add_argument("--rank", default="influence", choices=["influence", "ppl"],
                   help="layers: rank blocks by block influence (default) or by the perplexity increase "
                        "when each alone is removed")
    p.add_argument("--mlp", type=int, default=None, metavar="F", help="width: MLP channels to keep per layer")
    p.add_argument("--heads", type=int, default=None, metavar="H", help="width: query heads to keep per layer")
    p.add_argument("--kv-heads", type=int, default=None, metavar="K",
                   help="width: KV groups to keep (whole groups go; default: all, and --heads takes the same "
                        "number of query heads from each)")
    p.add_argument("--hidden", type=int, default=None, metavar="D", help="width: embedding channels to keep")
    p.add_argument("--sparsity", type=float, default=None,
                   help="magnitude|wanda|sparsegpt: the fraction of each projection's weights to zero, in [0, 1)")
    p.add_argument("--pattern", default=None, metavar="N:M",
                   help="magnitude|wanda|sparsegpt: keep N of every M consecutive weights (2:4, 4:8) instead")
    p.add_argument("--calib-dataset", default=None, metavar="NAME",
                   help="wikitext2 | c4 | pileval through `datasets` (online); default: labkit's calibration text")
    p.add_argument("--calib-samples", type=int, default=4, help="calibration windows (default 4)")
    p.add_argument("--calib-seqlen", type=int, default=512, help="tokens per window (default 512)")
    add_json_argument(p)


def check_arguments(args) -> None:
    """Every option that can be checked before loading a model, in one line each."""
    from labkit.errors import UserError

    if args.calib_samples < 1 or args.calib_seqlen < 16:
        raise UserError("--calib-samples must be >= 1 and --calib-seqlen >= 16")
    if args.method == "layers" and (args.ratio is None or not 0 < args.ratio < 1):
        raise UserError("--method layers needs --ratio R with 0 < R < 1 (the fraction of layers to remove)")
    if args.method in ONESHOT and (args.sparsity is None) == (args.pattern is None):
        raise UserError(f"--method {args.method} needs either --sparsity S or --pattern N:M")
    if args.sparsity is not None and not 0 <= args.sparsity < 1:
        raise UserError(f"--sparsity {args.sparsity} is outside [0, 1)")


def run(args) -> int:
    from labkit.errors import UserError
    from labkit.loading import load_model
    from labkit.models.llama import parameter_count
    from labkit.models.loader import resolve
    from labkit.prune.checkpoint import check_prunable, save_pruned
    from labkit.prune.depth import prune_depth
    from labkit.prune.oneshot import prune_oneshot
    from labkit.prune.width import prune_width
    from labkit.quant.calib import calibration_ids, dataset_text
    from labkit.quant.checkpoint import prepare_work_dir
    from labkit.quant.cli import source_name

    out = Path(args.work_dir).expanduser()
    check_arguments(args)
    prepare_work_dir(out, args.force)  # before the work, not after
    start = time.perf_counter()
    model, tokenizer = load_model(args.model, device="cpu", dtype=None)
    check_prunable(model)
    text = dataset_text(args.calib_dataset) if args.calib_dataset else None
    ids = calibration_ids(tokenizer, text, args.calib_samples, args.calib_seqlen)
    calibration = {"dataset": args.calib_dataset or "labkit", "samples": int(ids.shape[0]), "seqlen": int(ids.shape[1])}
    bar = lambda it: progress(it, f"{args.method} layers", not args.json)
    try:
        if args.method == "layers":
            pruned, section = prune_depth(model, ids, args.ratio, args.rank, progress=bar)
        elif args.method == "width":
            pruned, section = prune_width(model, ids, args.mlp, args.heads, args.kv_heads, args.hidden)
        else:
            pruned = model
            section = prune_oneshot(model, ids, args.method, args.sparsity, args.pattern, progress=bar)
    except ValueError as e:
        raise UserError(str(e)) from e
    if args.method != "magnitude":
        section["calibration"] = calibration
    save_pruned(pruned, out, source_name(args.model), resolve(args.model), section, args.force)
    result = {"work_dir": str(out), "source": source_name(args.model), **section,
              "parameters": parameter_count(pruned), "source_parameters": parameter_count(model),
              "seconds": round(time.perf_counter() - start, 1)}
    if args.method in ONESHOT:
        done = f"{section['linear_sparsity']:.1%} of the projections' weights are zero"
    else:
        done = f"{result['parameters'] / 1e6:.1f}M of {result['source_parameters'] / 1e6:.1f}M parameters left"
    emit(result, args.json, f"wrote {out} ({args.method}): {done}, in {result['seconds']} s")
    return 0
