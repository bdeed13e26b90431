"""A distillation run from MODEL specs to a trained checkpoint: what `labkit distill` does.

`prepare` loads the teacher and the student (a MODEL folder, or a pruning spec applied to the
teacher: `layers:0.25`, `width:mlp=1024,heads=6`), checks that they can be distilled (one
vocabulary, a student no larger than the teacher, full-precision weights), and builds the
training windows. `distill` runs the trainer in a work dir:

    DIR/config.json, model.safetensors, tokenizer files   the trained student (a MODEL folder)
    DIR/run/run.json          the run's settings (a resume must match them)
    DIR/run/data/             the teacher's answers and continuations, cached by teacher + prompts + settings
    DIR/run/checkpoints/      the newest checkpoint (model + trainer state)
    DIR/run/curve.json, .png  the loss curve and the evaluations
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from labkit.distill.checkpoint import latest
from labkit.distill.data import (DATA_KINDS, Windows, openings, prompts, teacher_answers,
                                 teacher_continuations, text_sequences)
from labkit.distill.losses import LOSSES
from labkit.distill.trainer import Run, TrainConfig, Trainer
from labkit.errors import UserError
from labkit.models.llama import Llama, parameter_count
from labkit.models.tokenizer import Tokenizer

MODEL_FILES = ("config.json", "model.safetensors")


@dataclass
class DataConfig:
    kind: str = "both"            # teacher | text | both
    prompts: int | None = None    # the first N prompts of the set (None: all)
    max_new_tokens: int = 160     # the teacher's answer length
    gen_temperature: float = 0.7
    samples: int = 1              # answers per prompt (each with its own seed)
    continuations: int = 0        # the teacher's continuations of calibration-text openings (0: none)


def check_settings(cfg: TrainConfig, data: DataConfig) -> None:
    """Every setting that can be wrong before anything is loaded, in one line each."""
    if cfg.loss not in LOSSES:
        raise UserError(f"--loss {cfg.loss!r} is not one of {', '.join(LOSSES)}")
    if cfg.steps < 1:
        raise UserError(f"--steps must be >= 1, got {cfg.steps}")
    if cfg.temperature <= 0:
        raise UserError(f"--temperature must be > 0, got {cfg.temperature}")
    if not 0 <= cfg.alpha <= 1:
        raise UserError(f"--alpha must be in [0, 1], got {cfg.alpha}")
    if not 0 < cfg.beta < 1:
        raise UserError(f"--beta must be in (0, 1), got {cfg.beta}")
    if cfg.hidden_weight < 0 or cfg.lr <= 0:
        raise UserError("--hidden-weight must be >= 0 and --lr > 0")
    if min(cfg.batch_size, cfg.accum, cfg.eval_every, cfg.ckpt_every) < 1 or cfg.seq_len < 8:
        raise UserError("--batch-size, --accum, --eval-every and --ckpt-every must be >= 1, --seq-len >= 8")
    if data.kind not in DATA_KINDS:
        raise UserError(f"--data {data.kind!r} is not one of {', '.join(DATA_KINDS)}")
    if data.prompts is not None and data.prompts < 1:
        raise UserError(f"--prompts must be >= 1, got {data.prompts}")
    if data.samples < 1 or data.max_new_tokens < 1:
        raise UserError("--samples and --max-new-tokens must be >= 1")
    if data.continuations < 0:
        raise UserError(f"--continuations must be >= 0, got {data.continuations}")
    if data.continuations and data.kind == "text":
        raise UserError("--continuations are the teacher's: use them with --data teacher or both")


def student_from_spec(spec: str, teacher: Llama, tokenizer: Tokenizer) -> tuple[Llama, dict]:
    """`layers:R` (depth pruning by block influence) or `width:mlp=F,heads=H,kv_heads=K,hidden=D`
    (width pruning), applied to a copy of the teacher on the calibration text."""
    import copy

    from labkit.prune.depth import prune_depth
    from labkit.prune.width import prune_width
    from labkit.quant.calib import calibration_ids

    method, _, value = spec.partition(":")
    ids = calibration_ids(tokenizer, None, 4, 512)
    try:
        if method == "layers":
            return prune_depth(copy.deepcopy(teacher), ids, float(value))
        widths = {k: int(v) for k, v in (item.split("=") for item in value.split(","))}
        unknown = set(widths) - {"mlp", "heads", "kv_heads", "hidden"}
        if unknown:
            raise ValueError(f"unknown width {sorted(unknown)[0]!r} (mlp, heads, kv_heads, hidden)")
        return prune_width(teacher, ids, **widths)
    except ValueError as e:
        raise UserError(f"--student {spec}: {e}") from e


def is_prune_spec(spec: str) -> bool:
    return spec.startswith(("layers:", "width:"))


def check_pair(teacher: Llama, t_tok: Tokenizer, student: Llama, s_tok: Tokenizer) -> None:
    """One vocabulary, and a student that is a full-precision model no larger than its teacher."""
    if student.config.vocab_size != teacher.config.vocab_size or s_tok.backend.get_vocab() != t_tok.backend.get_vocab():
        raise UserError(f"the student's vocabulary ({student.config.vocab_size} tokens) is not the teacher's "
                        f"({teacher.config.vocab_size}): distillation matches distributions token by token, "
                        "so both must share one tokenizer")
    if any(not p.is_floating_point() for p in student.state_dict().values()):
        raise UserError("the student is a quantized checkpoint: distill into full-precision weights, then quantize")
    if parameter_count(student) > parameter_count(teacher):
        raise UserError(f"the student ({parameter_count(student) / 1e6:.1f}M parameters) is larger than the teacher "
                        f"({parameter_count(teacher) / 1e6:.1f}M)")


def prepare_work_dir(work_dir: Path, settings: dict, resume: bool, force: bool) -> Path | None:
    """Check DIR before any work; returns the checkpoint to resume from (None: start fresh).

    A DIR holding another run needs --resume (continue it, same settings) or --force (replace
    its model and checkpoints; the cached teacher answers stay, they are keyed)."""
    run_json = work_dir / "run" / "run.json"
    if work_dir.exists() and not work_dir.is_dir():
        raise UserError(f"--work-dir {work_dir} is a file")
    if resume:
        if not run_json.is_file():
            raise UserError(f"--resume: {work_dir} holds no distillation run (no run/run.json)")
        before = json.loads(run_json.read_text())
        changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
        if changed:
            raise UserError(f"--resume: {', '.join(changed)} differ from the run in {work_dir} "
                            f"(was {', '.join(f'{k}={before.get(k)!r}' for k in changed)})")
        return latest(work_dir / "run" / "checkpoints")
    if work_dir.is_dir() and any(work_dir.iterdir()):
        if not force:
            raise UserError(f"--work-dir {work_dir} is not empty (another run?): --resume to continue it, "
                            "--force to replace it")
        for name in (*MODEL_FILES, "run/checkpoints", "run/curve.json", "run/curve.png"):
            path = work_dir / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    try:
        run_json.parent.mkdir(parents=True, exist_ok=True)
        run_json.write_text(json.dumps(settings, indent=1))
    except OSError as e:
        raise UserError(f"cannot write to --work-dir {work_dir}: {e.strerror or e}") from e
    return None


def training_sequences(teacher: Llama, tokenizer: Tokenizer, teacher_spec: str, data: DataConfig, cache: Path,
                       seed: int, show_progress: bool) -> list[list[int]]:
    from labkit.texts import calibration_text

    sequences = []
    if data.kind in ("teacher", "both"):
        asked = prompts()[:data.prompts]
        for k in range(data.samples):   # seeds seed + k * len(asked) + i: every answer its own
            sequences += teacher_answers(teacher, tokenizer, teacher_spec, asked, cache, data.max_new_tokens,
                                         data.gen_temperature, seed + k * len(asked), show_progress)
        if data.continuations:   # openings from the calibration text, never the evaluation text
            starts = openings(tokenizer, calibration_text(), data.continuations)
            sequences += teacher_continuations(teacher, tokenizer, teacher_spec, starts, cache, seed=seed,
                                               show_progress=show_progress)
    if data.kind in ("text", "both"):
        sequences += text_sequences(tokenizer, calibration_text())
    return sequences


def distill(teacher_spec: str, student_spec: str, work_dir: str | Path, cfg: TrainConfig, data: DataConfig,
            device: str = "cpu", resume: bool = False, force: bool = False, show_progress: bool = True,
            data_cache: Path | None = None) -> dict:
    """Train `student_spec` on `teacher_spec` in `work_dir`; the summary of the run (ppl, kl, top1, tokens, steps).

    `data_cache` (default DIR/run/data) is where the teacher's answers are cached: runs that
    share one generate them once."""
    from labkit.texts import eval_text
    from labkit.loading import load_model
    from labkit.models.loader import resolve

    check_settings(cfg, data)
    work_dir = Path(work_dir).expanduser()
    settings = {"teacher": teacher_spec, "student": student_spec, "train": asdict(cfg), "data": asdict(data)}
    start_from = prepare_work_dir(work_dir, settings, resume, force)
    # float32 weights everywhere; on a GPU the trainer computes in bfloat16 under autocast
    teacher, tokenizer = load_model(teacher_spec, device=device, dtype=torch.float32)
    if is_prune_spec(student_spec):
        student, _ = student_from_spec(student_spec, teacher, tokenizer)
        student = student.float().to(device)
        s_tok = tokenizer
    else:
        student, s_tok = load_model(student_spec, device=device, dtype=torch.float32)
    check_pair(teacher, tokenizer, student, s_tok)
    student.requires_grad_(True)
    teacher.requires_grad_(False)
    started = time.perf_counter()
    sequences = training_sequences(teacher, tokenizer, teacher_spec, data, data_cache or work_dir / "run" / "data",
                                   cfg.seed, show_progress)
    data_seconds = round(time.perf_counter() - started, 1)   # generating, or reading the cache
    eos = sorted(teacher.config.eos_ids)[0] if teacher.config.eos_ids else 0
    try:
        windows = Windows(sequences, cfg.seq_len, eos, cfg.seed)
    except ValueError as e:
        raise UserError(f"not enough training data: {e}") from e
    trainer = Trainer(student, teacher, windows, tokenizer.encode(eval_text()), cfg,
                      Run(work_dir, teacher_spec, resolve(teacher_spec)), show_progress)
    if start_from is not None:
        trainer.restore(start_from)
    summary = trainer.fit()
    return {"work_dir": str(work_dir), "teacher": teacher_spec, "student": student_spec, "loss": cfg.loss,
            "parameters": parameter_count(student), "teacher_parameters": parameter_count(teacher),
            "train_windows": windows.count, "data_tokens": len(windows.ids), "data_seconds": data_seconds,
            **summary}
