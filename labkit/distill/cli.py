"""`labkit distill --teacher MODEL --student MODEL|layers:R|width:... --work-dir DIR [...]`."""
from __future__ import annotations

import argparse

from labkit.clitools import add_json_argument, emit



def add_arguments(p: argparse.ArgumentParser) -> None:
    from labkit.distill.trainer import TrainConfig

    d = TrainConfig()
    p.add_argument("--teacher", default="embedded", metavar="MODEL", help="the model to learn from (default: embedded)")
    p.add_argument("--student", required=True, metavar="MODEL",
                   help="a MODEL folder sharing the teacher's tokenizer, or a pruning of the teacher: "
                        "layers:R (drop a fraction R of the layers) or width:mlp=F,heads=H,kv_heads=K,hidden=D")
    p.add_argument("--work-dir", required=True, metavar="DIR", help="where the run and the trained student go")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, default=None, help=f"optimizer steps (default {d.steps})")
    budget.add_argument("--tokens", type=int, default=None, help="tokens to train on (rounded up to whole steps)")
    p.add_argument("--loss", default=d.loss, choices=["fkl", "rkl", "jsd", "ce"],
                   help="forward KL (default), reverse KL, generalized JSD, or plain cross-entropy fine-tuning")
    p.add_argument("--temperature", type=float, default=d.temperature, help="softening temperature T (loss x T^2)")
    p.add_argument("--alpha", type=float, default=d.alpha, help="weight of the hard-label cross-entropy in [0, 1]")
    p.add_argument("--beta", type=float, default=d.beta, help="jsd: the mixture weight in (0, 1)")
    p.add_argument("--hidden-weight", type=float, default=d.hidden_weight,
                   help="weight of the hidden-state MSE on mapped layers (default 0: off)")
    p.add_argument("--data", default="both", choices=["teacher", "text", "both"],
                   help="the teacher's answers to labkit's prompts, the calibration text, or both (default)")
    p.add_argument("--prompts", type=int, default=None, metavar="N", help="use the first N prompts only")
    p.add_argument("--max-new-tokens", type=int, default=160, help="length of the teacher's answers")
    p.add_argument("--samples", type=int, default=1, help="answers per prompt (sampled with different seeds)")
    p.add_argument("--continuations", type=int, default=0, metavar="N",
                   help="also N continuations by the teacher (256 tokens each, temperature 1) of openings taken "
                        "from the calibration text: more prose-like data for long runs (default 0)")
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default {d.lr})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="windows per micro-batch")
    p.add_argument("--accum", type=int, default=d.accum, help="micro-batches per step (gradient accumulation)")
    p.add_argument("--seq-len", type=int, default=d.seq_len, help="tokens per window")
    p.add_argument("--eval-every", type=int, default=d.eval_every, metavar="K", help="evaluate every K steps")
    p.add_argument("--eval-tokens", type=int, default=None, metavar="N",
                   help=f"evaluate on the first N tokens of the evaluation text (default {d.eval_tokens} during "
                        "training, all of it at the end)")
    p.add_argument("--ckpt-every", type=int, default=d.ckpt_every, metavar="K", help="checkpoint every K steps")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda where there is one)")
    p.add_argument("--resume", action="store_true", help="continue the run in DIR from its last checkpoint")
    p.add_argument("--force", action="store_true", help="replace the run in DIR")
    add_json_argument(p)


def run(args) -> int:
    import torch

    from labkit.distill.pipeline import DataConfig, distill
    from labkit.distill.trainer import TrainConfig
    from labkit.errors import UserError

    if args.resume and args.force:
        raise UserError("--resume and --force exclude each other")
    cfg = TrainConfig(batch_size=args.batch_size, accum=args.accum, seq_len=args.seq_len, lr=args.lr,
                      loss=args.loss, temperature=args.temperature, alpha=args.alpha, beta=args.beta,
                      hidden_weight=args.hidden_weight, eval_every=args.eval_every, ckpt_every=args.ckpt_every,
                      seed=args.seed)
    if args.eval_tokens is not None:
        if args.eval_tokens < 1:
            raise UserError(f"--eval-tokens must be >= 1, got {args.eval_tokens}")
        cfg.eval_tokens = cfg.final_eval_tokens = args.eval_tokens
    if args.tokens is not None:
        if args.tokens < 1:
            raise UserError(f"--tokens must be >= 1, got {args.tokens}")
        cfg.steps = -(-args.tokens // cfg.tokens_per_step)
    elif args.steps is not None:
        cfg.steps = args.steps
    data = DataConfig(kind=args.data, prompts=args.prompts, max_new_tokens=args.max_new_tokens, samples=args.samples,
                      continuations=args.continuations)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = distill(args.teacher, args.student, args.work_dir, cfg, data, device, args.resume, args.force,
                  show_progress=not args.json)
    start = out["start"]
    table = (f"distilled {args.student} from {args.teacher} into {args.work_dir}: {out['steps']} steps, "
             f"{out['tokens']} tokens, {out['tokens_per_s']} tokens/s\n"
             f"  before: perplexity {start['ppl']:.3f}, KL {start['kl']:.4f}, top-1 {start['top1']:.2%} "
             f"(first {start['eval_tokens']} evaluation tokens)\n"
             f"  after:  perplexity {out['ppl']:.3f}, KL {out['kl']:.4f}, top-1 {out['top1']:.2%} "
             f"({out['eval_tokens']} evaluation tokens)")
    emit(out, args.json, table)
    return 0
