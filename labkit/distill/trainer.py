"""A small, readable distillation loop.

Per step: `accum` micro-batches of windows; the teacher's logits (and hidden states, when
matched) under no_grad, the student's with gradients, the loss of `labkit.distill.losses`,
backward; then gradient clipping and one AdamW step with a linear warm-up and a cosine decay
of the learning rate. Float32 on a CPU; on a GPU the matmuls run in bfloat16 under autocast
while the weights and optimizer state stay float32.

Every `eval_every` steps the student is measured with `labkit.eval` (perplexity on the
evaluation text, KL and top-1 agreement against the teacher); every `ckpt_every` steps and at
the end a checkpoint is written (`labkit.distill.checkpoint`). The data order is a function of
the step (`labkit.distill.data.Windows`) and the rest of the state is in the checkpoint, so a
resumed run ends with the same weights as an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from labkit.distill import checkpoint as ckpt
from labkit.distill.data import Windows
from labkit.distill.losses import HiddenMatcher, HiddenStates, distill_loss, layer_map
from labkit.eval import evaluate
from labkit.models.llama import Llama


@dataclass
class TrainConfig:
    steps: int = 36               # 73,728 tokens: ~10 minutes on 2 CPU threads (docs/benchmarks.md)
    batch_size: int = 4           # windows per micro-batch
    accum: int = 2                # micro-batches per optimizer step
    seq_len: int = 256
    lr: float = 2e-4
    min_lr: float = 2e-5          # where the cosine ends
    warmup: float = 0.1           # the fraction of the steps spent warming up
    weight_decay: float = 0.0
    clip: float = 1.0
    loss: str = "fkl"
    temperature: float = 1.0
    alpha: float = 0.0            # weight of the hard-label cross-entropy (fkl, rkl, jsd)
    beta: float = 0.5             # the generalized JSD's mixture weight
    hidden_weight: float = 0.0    # weight of the hidden-state MSE (0: off)
    eval_every: int = 12
    eval_tokens: int = 2048       # evaluation tokens during training
    final_eval_tokens: int | None = None   # at the end (None: the whole evaluation text)
    ckpt_every: int = 12
    seed: int = 0

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.accum * self.seq_len


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to `lr` over the first `warmup` of the steps, then a cosine down to `min_lr`."""
    warmup = max(1, round(cfg.warmup * cfg.steps))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, cfg.steps - warmup)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class Run:
    """Where a run writes: the final model at the top of `work_dir`, the rest in `work_dir/run`."""
    work_dir: Path
    source: str                   # the teacher's MODEL spec (what `labkit eval DIR` compares against)
    tokenizer_dir: Path

    @property
    def run_dir(self) -> Path:
        return self.work_dir / "run"

    @property
    def checkpoints(self) -> Path:
        return self.run_dir / "checkpoints"


class Trainer:
    def __init__(self, student: Llama, teacher: Llama, data: Windows, eval_ids: list[int], cfg: TrainConfig,
                 run: Run, show_progress: bool = True):
        self.student, self.teacher, self.data, self.eval_ids, self.cfg, self.run = student, teacher, data, eval_ids, cfg, run
        self.device = student.lm_head.weight.device
        self.show_progress = show_progress
        self.matcher = None
        if cfg.hidden_weight > 0:
            pairs = layer_map(student.config.num_hidden_layers, teacher.config.num_hidden_layers)
            self.matcher = HiddenMatcher(student.config.hidden_size, teacher.config.hidden_size, pairs).to(self.device)
        params = list(student.parameters()) + (list(self.matcher.parameters()) if self.matcher else [])
        self.params = list({id(p): p for p in params}.values())   # a tied embedding once
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
        self.step, self.seconds = 0, 0.0
        self.curve: list[dict] = []    # per step: loss, lr, tokens
        self.evals: list[dict] = []    # per evaluation: ppl, kl, top1

    # ------------------------------------------------------------------ one step
    def autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def micro_batch_loss(self, batch: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        x, labels = batch[:, :-1].to(self.device), batch[:, 1:].to(self.device)
        pairs = self.matcher.pairs if self.matcher else []
        hs_s = HiddenStates(self.student, [i for i, _ in pairs]) if pairs else None
        hs_t = HiddenStates(self.teacher, [j for _, j in pairs]) if pairs else None
        try:
            with self.autocast():
                teacher_logits = None
                if cfg.loss != "ce" or self.matcher:
                    with torch.no_grad():
                        teacher_logits = self.teacher(x)
                student_logits = self.student(x)
                loss = distill_loss(cfg.loss, student_logits, teacher_logits, labels, cfg.temperature, cfg.alpha, cfg.beta)
                if self.matcher:
                    loss = loss + cfg.hidden_weight * self.matcher(hs_s.states, hs_t.states)
        finally:
            for hs in (hs_s, hs_t):
                if hs:
                    hs.remove()
        return loss

    def train_step(self) -> float:
        cfg = self.cfg
        self.student.train()
        lr = lr_at(self.step, cfg)
        for group in self.opt.param_groups:
            group["lr"] = lr
        total = 0.0
        first = self.step * cfg.batch_size * cfg.accum
        for micro in range(cfg.accum):
            loss = self.micro_batch_loss(self.data.batch(first + micro * cfg.batch_size, cfg.batch_size)) / cfg.accum
            loss.backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(self.params, cfg.clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.step += 1
        self.curve.append({"step": self.step, "tokens": self.step * cfg.tokens_per_step, "loss": total, "lr": lr})
        return total

    # ------------------------------------------------------------------ measuring
    def evaluate(self, max_tokens: int | None) -> dict:
        self.student.eval()
        with self.autocast():
            r = evaluate(self.student, self.eval_ids, self.teacher, window=self.cfg.seq_len, max_tokens=max_tokens)
        return {"step": self.step, "tokens": self.step * self.cfg.tokens_per_step, "eval_tokens": r.tokens,
                "ppl": r.ppl, "kl": r.kl, "top1": r.top1}

    # ------------------------------------------------------------------ checkpoints
    def save(self, final: bool = False) -> Path:
        record = {"method": "distill", "loss": self.cfg.loss, "step": self.step,
                  "tokens": self.step * self.cfg.tokens_per_step}
        if final:
            return ckpt.write_final(self.run.work_dir, self.student, self.run.source, self.run.tokenizer_dir, record)
        tensors, meta = ckpt.optimizer_state(self.opt)
        if self.matcher:
            tensors |= ckpt.module_tensors("matcher", self.matcher)
        meta |= {"step": self.step, "seconds": self.seconds, "curve": self.curve, "evals": self.evals,
                 "config": asdict(self.cfg)}
        out = ckpt.save_checkpoint(self.run.checkpoints / f"step-{self.step:06d}", self.student, self.run.source,
                                   self.run.tokenizer_dir, record, tensors, meta)
        for old in self.run.checkpoints.glob("step-*"):   # keep the newest only: each holds the whole state
            if old != out:
                shutil.rmtree(old, ignore_errors=True)
        return out

    def restore(self, folder: Path) -> None:
        from labkit.models.loader import read_tensors

        weights = read_tensors(folder)
        self.student.load_state_dict(weights, strict=False)
        tensors, meta = ckpt.read_state(folder)
        ckpt.load_optimizer_state(self.opt, tensors, meta)
        if self.matcher:
            ckpt.load_module_tensors("matcher", self.matcher, tensors)
        self.step, self.seconds = meta["step"], meta["seconds"]
        self.curve, self.evals = meta["curve"], meta["evals"]

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict:
        """Train to `cfg.steps` (from wherever a restored checkpoint left off); evaluate on the
        whole evaluation text at the end. Returns the summary the CLI prints."""
        cfg = self.cfg
        if self.step == 0 and not self.evals:
            self.evals.append(self.evaluate(cfg.eval_tokens))
        bar = _bar(cfg.steps, self.step, self.show_progress)
        while self.step < cfg.steps:
            start = time.perf_counter()
            loss = self.train_step()
            self.seconds += time.perf_counter() - start
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{self.step * cfg.tokens_per_step / max(self.seconds, 1e-9):.0f}")
            if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                self.evals.append(self.evaluate(cfg.eval_tokens))
            if self.step % cfg.ckpt_every == 0 and self.step < cfg.steps:
                self.save()
        if bar is not None:
            bar.close()
        final = self.evaluate(cfg.final_eval_tokens)
        self.save(final=True)
        summary = {"ppl": final["ppl"], "kl": final["kl"], "top1": final["top1"], "eval_tokens": final["eval_tokens"],
                   "tokens": self.step * cfg.tokens_per_step, "steps": self.step,
                   "train_seconds": round(self.seconds, 1), "tokens_per_s": round(self.step * cfg.tokens_per_step / max(self.seconds, 1e-9), 1),
                   "start": self.evals[0]}
        self.write_curve(summary)
        return summary

    def write_curve(self, summary: dict) -> None:
        """The loss curve and the evaluations as JSON, and as a PNG where matplotlib is installed."""
        self.run.run_dir.mkdir(parents=True, exist_ok=True)
        data = {"config": asdict(self.cfg), "curve": self.curve, "evals": self.evals, "final": summary}
        (self.run.run_dir / "curve.json").write_text(json.dumps(data, indent=1))
        try:
            from labkit.distill.plots import plot_curve
        except ImportError:   # matplotlib is an optional extra
            return
        plot_curve(data).savefig(self.run.run_dir / "curve.png", dpi=100, bbox_inches="tight")


def _bar(total: int, done: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc="distill", unit="step", file=sys.stderr, leave=False)
