"""`labkit bench distill [--only headline pipeline] [--tokens N] [--json]`: what distillation recovers.

- `headline`: depth-prune the teacher (a quarter of its layers, by block influence; and a
  width-pruned student with --width), then train each student on the same data for the same
  number of tokens: not at all, plain fine-tuning (`ce`), forward-KL distillation (`fkl`) and
  the other losses. Perplexity on the evaluation text, KL and top-1 agreement against the
  teacher, and the share of the pruned student's perplexity gap to the teacher that training
  closed: (ppl_pruned - ppl) / (ppl_pruned - ppl_teacher).
- `pipeline`: what a learner ends with, prune -> distill -> AWQ W4 (g128) -> served by
  labkit's engine: parameters, weight MiB on disk, batch-1 decode tokens/s, perplexity and KL
  for the teacher, the pruned, the distilled and the distilled + AWQ model.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from labkit.distill.pipeline import DataConfig, distill, student_from_spec
from labkit.distill.trainer import TrainConfig

LOSS_VARIANTS = {"ce": {"loss": "ce"}, "fkl": {"loss": "fkl"}, "rkl": {"loss": "rkl"},
                 "jsd": {"loss": "jsd", "beta": 0.5}, "fkl T=2 +ce": {"loss": "fkl", "temperature": 2.0, "alpha": 0.2}}


def recovered(ppl: float, pruned: float, teacher: float) -> float:
    """The share of the perplexity gap (pruned -> teacher) that training closed."""
    return (pruned - ppl) / (pruned - teacher)


def headline(teacher: str, students: dict[str, str], variants: list[str], tokens: int, device: str, root: Path,
             data: DataConfig, base: TrainConfig, log) -> dict:
    from labkit.eval import eval_text, evaluate
    from labkit.loading import load_model

    model, tokenizer = load_model(teacher, device=device, dtype=torch.float32)
    ids = tokenizer.encode(eval_text())
    t_eval = evaluate(model, ids, window=base.seq_len)
    rows = []
    for name, spec in students.items():
        pruned, _ = student_from_spec(spec, model, tokenizer)
        p_eval = evaluate(pruned.float().to(device), ids, model, window=base.seq_len)
        del pruned
        rows.append({"student": name, "spec": spec, "variant": "none", "tokens": 0, "ppl": p_eval.ppl,
                     "kl": p_eval.kl, "top1": p_eval.top1, "recovered": 0.0, "train_seconds": 0.0})
        log(f"{name}: pruned ppl {p_eval.ppl:.2f} (teacher {t_eval.ppl:.2f})")
        for variant in variants:
            cfg = TrainConfig(**{**base.__dict__, **LOSS_VARIANTS[variant]})
            cfg.steps = -(-tokens // cfg.tokens_per_step)
            out = distill(teacher, spec, root / f"{name}-{variant}".replace(" ", "_").replace("=", ""), cfg, data,
                          device, force=True, show_progress=False, data_cache=root / "data")
            rows.append({"student": name, "spec": spec, "variant": variant, "tokens": out["tokens"],
                         "steps": out["steps"], "ppl": out["ppl"], "kl": out["kl"], "top1": out["top1"],
                         "recovered": recovered(out["ppl"], p_eval.ppl, t_eval.ppl),
                         "train_seconds": out["train_seconds"], "tokens_per_s": out["tokens_per_s"],
                         "data_tokens": out["data_tokens"], "data_seconds": out["data_seconds"],
                         "parameters": out["parameters"], "work_dir": out["work_dir"]})
            log(f"{name} {variant}: ppl {out['ppl']:.2f}, KL {out['kl']:.4f}, top-1 {out['top1']:.2%}, "
                f"{out['tokens']} tokens in {out['train_seconds']} s (data: {out['data_tokens']} tokens, "
                f"{out['data_seconds']} s to generate or read)")
    return {"teacher": teacher, "teacher_ppl": t_eval.ppl, "eval_tokens": t_eval.tokens, "tokens": tokens,
            "train": base.__dict__, "data": data.__dict__, "rows": rows}


def headline_table(result: dict) -> str:
    lines = [f"teacher {result['teacher']}: perplexity {result['teacher_ppl']:.3f}",
             "| student | training | tokens | perplexity | KL | top-1 | gap recovered | train s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['student']} | {r['variant']} | {r['tokens']} | {r['ppl']:.3f} | {r['kl']:.4f} | "
                     f"{r['top1']:.2%} | {r['recovered']:.0%} | {r['train_seconds']} |")
    return "\n".join(lines)


def decode_tok_s(spec: str, device: str, prompt: list[int], output_len: int = 64, rounds: int = 3) -> float:
    """Batch-1 decode tokens/s of a MODEL folder through labkit's engine (median of rounds)."""
    from labkit.engine import LLM
    from labkit.engine.workload import engine_static, greedy

    llm = LLM(spec, device=device, max_batch_size=1, max_model_len=len(prompt) + output_len + 1,
              num_blocks=(len(prompt) + output_len) // 16 + 2, backend="numba" if device.startswith("cuda") else "torch")
    llm.generate([prompt], greedy(output_len))   # warm up
    speeds = [engine_static(llm, 1, [prompt], output_len)["decode_tok_s_per_seq"] for _ in range(rounds)]
    llm.close()
    return statistics.median(speeds)


def pipeline(teacher: str, pruned_spec: str, distilled_dir: str, device: str, root: Path, log) -> list[dict]:
    """Teacher, pruned, distilled and distilled + AWQ: size, speed and quality side by side."""
    from labkit.eval import eval_text, evaluate
    from labkit.loading import load_model
    from labkit.models.llama import parameter_count
    from labkit.models.loader import resolve
    from labkit.prune.checkpoint import save_pruned
    from labkit.quant.awq import awq_quantize
    from labkit.quant.checkpoint import save_quantized

    model, tokenizer = load_model(teacher, dtype=torch.float32)
    pruned, section = student_from_spec(pruned_spec, model, tokenizer)
    save_pruned(pruned, root / "pruned", teacher, resolve(teacher), section, force=True)
    distilled, _ = load_model(distilled_dir, device=device, dtype=torch.float32)
    awq_quantize(distilled, tokenizer, bits=4, group_size=128)
    save_quantized(distilled, root / "distilled-awq", teacher, resolve(teacher), "awq", force=True)
    ids = tokenizer.encode(eval_text())
    prompt = ids[:64]
    rows = []
    for name, spec in (("teacher", teacher), ("pruned", str(root / "pruned")), ("distilled", distilled_dir),
                       ("distilled + AWQ W4 g128", str(root / "distilled-awq"))):
        m, _ = load_model(spec, device=device)
        r = evaluate(m, ids, model.to(device) if name != "teacher" else None)
        files = resolve(spec).glob("*.safetensors")
        rows.append({"model": name, "parameters": parameter_count(m), "weight_mib": round(sum(f.stat().st_size for f in files) / 2**20, 1),
                     "ppl": r.ppl, "kl": r.kl, "top1": r.top1, "decode_tok_s": decode_tok_s(spec, device, prompt)})
        del m
        log(f"pipeline {name}: {rows[-1]}")
    return rows


def pipeline_table(rows: list[dict], device: str) -> str:
    lines = [f"| model | parameters | weights on disk | batch-1 decode tok/s ({device}) | perplexity | KL | top-1 |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        kl = "-" if r["kl"] is None else f"{r['kl']:.4f}"
        top1 = "-" if r["top1"] is None else f"{r['top1']:.2%}"
        lines.append(f"| {r['model']} | {r['parameters'] / 1e6:.1f}M | {r['weight_mib']} MiB | {r['decode_tok_s']:.1f} | "
                     f"{r['ppl']:.3f} | {kl} | {top1} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from labkit.errors import UserError

    p = argparse.ArgumentParser(prog="labkit bench distill", description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=["headline", "pipeline"], default=["headline", "pipeline"])
    p.add_argument("--teacher", default="embedded", metavar="MODEL")
    p.add_argument("--depth", default="layers:0.25", help="the depth-pruned student (default layers:0.25)")
    p.add_argument("--width", default=None, metavar="SPEC", help="also a width-pruned student, e.g. width:mlp=768,heads=6")
    p.add_argument("--students", nargs="+", choices=["depth", "width"], default=None,
                   help="which students to train (default: depth, and width when --width is given)")
    p.add_argument("--variants", nargs="+", default=["ce", "fkl", "jsd", "fkl T=2 +ce"], choices=sorted(LOSS_VARIANTS))
    p.add_argument("--tokens", type=int, default=73_728, help="training tokens per run (default: the CPU budget)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--accum", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--samples", type=int, default=1, help="teacher answers per prompt")
    p.add_argument("--continuations", type=int, default=0, metavar="N",
                   help="also N teacher continuations of calibration-text openings (256 tokens each)")
    p.add_argument("--device", default=None)
    p.add_argument("--work-dir", default=None, help="keep the runs here (default: a temporary folder)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    if min(args.tokens, args.batch_size, args.accum, args.samples) < 1 or args.continuations < 0:
        raise UserError("--tokens, --batch-size, --accum and --samples must be >= 1, --continuations >= 0")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    root = Path(args.work_dir or tempfile.mkdtemp(prefix="labkit-bench-distill-"))
    start = time.perf_counter()
    where = torch.cuda.get_device_name() if device.startswith("cuda") else f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    result = {"suite": "distill", "date": datetime.date.today().isoformat(), "torch": torch.__version__,
              "command": "labkit bench distill " + " ".join(argv or []), "device": where}
    base = TrainConfig(batch_size=args.batch_size, accum=args.accum, seq_len=args.seq_len, lr=args.lr,
                       eval_every=10**9, ckpt_every=10**9)
    tables = []
    chosen = args.students or ["depth", "width"]
    if "width" in chosen and not args.width and args.students:
        raise UserError("--students width needs --width SPEC")
    students = {name: spec for name, spec in (("depth", args.depth), ("width", args.width)) if name in chosen and spec}
    if "headline" in args.only:
        result["headline"] = headline(args.teacher, students, args.variants, args.tokens, device, root,
                                      DataConfig(samples=args.samples, continuations=args.continuations), base, log)
        tables.append(headline_table(result["headline"]))
    if "pipeline" in args.only:
        best = min((r for r in result.get("headline", {}).get("rows", []) if r["student"] == "depth" and r["variant"] != "none"),
                   key=lambda r: r["ppl"], default=None)
        if best is None:
            raise UserError("the pipeline needs the depth student's headline run: run both parts with the depth student")
        result["pipeline"] = pipeline(args.teacher, args.depth, best["work_dir"], device, root, log)
        result["pipeline_distilled"] = best["variant"]
        tables.append(pipeline_table(result["pipeline"], where))
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result) if args.json else "\n\n".join(tables))
    return 0
