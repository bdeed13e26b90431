"""A distillation run end to end on a tiny random teacher / student pair: data, training,
checkpoints, the work dir's rules, and the CLI's one-line errors."""
import json

import pytest
import torch

from labkit.cli import main
from labkit.distill.pipeline import DataConfig, distill
from labkit.distill.trainer import TrainConfig, lr_at

from .conftest import save_folder, tiny_model

SMALL = dict(batch_size=2, accum=2, seq_len=32, lr=3e-3, eval_every=3, ckpt_every=3, eval_tokens=256,
             final_eval_tokens=512)
DATA = DataConfig(kind="both", prompts=6, max_new_tokens=12)


def test_schedule_warms_up_then_decays_to_min_lr():
    cfg = TrainConfig(steps=100, lr=1e-3, min_lr=1e-4, warmup=0.1)
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] == pytest.approx(1e-4, rel=0.01)


@pytest.mark.slow
def test_a_run_lowers_kl_and_leaves_a_model_folder(pair, tmp_path):
    from labkit.loading import load_model

    teacher, student = pair
    out = distill(teacher, student, tmp_path / "run", TrainConfig(steps=6, **SMALL), DATA, show_progress=False)
    assert out["steps"] == 6 and out["tokens"] == 6 * 2 * 2 * 32
    assert out["data_tokens"] == out["train_windows"] * 32 + 1 and out["data_seconds"] >= 0
    assert out["kl"] < out["start"]["kl"], (out["start"], out)
    work = tmp_path / "run"
    model, _ = load_model(str(work))
    assert model.config.num_hidden_layers == 2
    config = json.loads((work / "config.json").read_text())
    assert config["labkit"]["source"] == teacher and config["labkit"]["method"] == "distill"
    from labkit.eval.cli import default_reference

    assert default_reference(str(work)) == teacher   # `labkit eval DIR` compares against the teacher
    curve = json.loads((work / "run" / "curve.json").read_text())
    assert [c["step"] for c in curve["curve"]] == list(range(1, 7))
    assert [e["step"] for e in curve["evals"]] == [0, 3, 6]
    cached = list((work / "run" / "data").glob("teacher-*.json"))
    assert len(cached) == 1 and len(json.loads(cached[0].read_text())["sequences"]) == 6
    # the same teacher and prompts again (--force): the answers come from the cache, not the engine
    mtime = cached[0].stat().st_mtime_ns
    distill(teacher, student, work, TrainConfig(steps=1, **SMALL), DATA, force=True, show_progress=False)
    assert cached[0].stat().st_mtime_ns == mtime and not (work / "run" / "checkpoints").exists()


@pytest.mark.slow
@pytest.mark.parametrize("loss, extra", [("rkl", {}), ("jsd", {"beta": 0.3}), ("ce", {}),
                                         ("fkl", {"hidden_weight": 1.0, "alpha": 0.5, "temperature": 2.0})])
def test_every_loss_trains(pair, tmp_path, loss, extra):
    teacher, student = pair
    cfg = TrainConfig(steps=4, loss=loss, **{**SMALL, "eval_every": 4, **extra})
    out = distill(teacher, student, tmp_path / loss, cfg, DataConfig(kind="text"), show_progress=False)
    curve = json.loads((tmp_path / loss / "run" / "curve.json").read_text())["curve"]
    assert curve[-1]["loss"] < curve[0]["loss"] and out["steps"] == 4


@pytest.mark.slow
def test_resume_continues_from_the_checkpoint_exactly(pair, tmp_path):
    teacher, student = pair
    cfg, data = TrainConfig(steps=6, **SMALL), DataConfig(kind="text")
    whole = distill(teacher, student, tmp_path / "whole", cfg, data, show_progress=False)
    # stop after the step-3 checkpoint: run 3 of the 6 steps' schedule, then resume
    part = tmp_path / "part"
    distill(teacher, student, part, cfg, data, show_progress=False)
    for name in ("config.json", "model.safetensors"):
        (part / name).unlink()
    resumed = distill(teacher, student, part, cfg, data, resume=True, show_progress=False)
    assert resumed["steps"] == 6 and resumed["ppl"] == pytest.approx(whole["ppl"], rel=1e-5)
    from labkit.models.loader import read_tensors

    a, b = read_tensors(tmp_path / "whole"), read_tensors(part)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def _cli(*args) -> int:
    return main(["distill", *args])


def test_bad_input_is_one_line_and_nothing_is_lost(pair, tmp_path, capsys):
    teacher, student = pair
    base = ["--teacher", teacher, "--student", student, "--data", "text", "--seq-len", "32", "--batch-size", "2"]
    cases = [
        (["--work-dir", str(tmp_path / "a"), "--steps", "-1"], "--steps must be >= 1"),
        (["--work-dir", str(tmp_path / "a"), "--temperature", "0"], "--temperature must be > 0"),
        (["--work-dir", str(tmp_path / "a"), "--alpha", "2"], "--alpha"),
        (["--work-dir", str(tmp_path / "a"), "--resume"], "holds no distillation run"),
        (["--work-dir", str(tmp_path / "a"), "--continuations", "-1"], "--continuations must be >= 0"),
        (["--work-dir", str(tmp_path / "a"), "--continuations", "8"], "use them with --data teacher or both"),
    ]
    afile = tmp_path / "file"
    afile.write_text("x")
    cases.append((["--work-dir", str(afile / "sub")], "cannot write"))
    for extra, message in cases:
        assert _cli(*base, *extra) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.slow
def test_mismatched_or_larger_students_are_refused(pair, tmp_path, capsys):
    teacher, student = pair
    other_vocab = save_folder(tiny_model(2, vocab_size=49153, num_hidden_layers=2), tmp_path / "v")
    larger = save_folder(tiny_model(3, vocab_size=49152, num_hidden_layers=6), tmp_path / "big")
    cases = ((other_vocab, "vocabulary"), (larger, "larger than the teacher"),
             ("layers:1.5", "--student layers:1.5"), ("width:mlp=4096", "--student width"))
    for i, (spec, message) in enumerate(cases):
        assert _cli("--teacher", teacher, "--student", spec, "--work-dir", str(tmp_path / "runs" / str(i)),
                    "--data", "text", "--steps", "1") == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err


@pytest.mark.slow
def test_a_work_dir_with_a_run_needs_resume_or_force(pair, tmp_path, capsys):
    teacher, student = pair
    work = tmp_path / "w"
    args = ["--teacher", teacher, "--student", student, "--work-dir", str(work), "--data", "text", "--steps", "2",
            "--seq-len", "32", "--batch-size", "2", "--accum", "1", "--eval-every", "2", "--eval-tokens", "64", "--json"]
    assert _cli(*args) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"ppl", "kl", "top1", "tokens", "steps"} <= set(out) and out["tokens"] == 2 * 2 * 32
    before = (work / "model.safetensors").read_bytes()
    assert _cli(*args) == 2
    assert "--resume to continue it, --force to replace it" in capsys.readouterr().err
    assert _cli(*[a if a != "2" else "3" for a in args[:10]], *args[10:], "--resume") == 2
    assert "steps" in capsys.readouterr().err
    assert (work / "model.safetensors").read_bytes() == before


@pytest.mark.slow
def test_a_killed_run_resumed_ends_like_an_uninterrupted_one(pair, tmp_path):
    """SIGKILL mid-way (after the first checkpoint), --resume, and the weights match a run never stopped."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from labkit.models.loader import read_tensors

    teacher, student = pair
    args = ["--teacher", teacher, "--student", student, "--data", "text", "--steps", "30", "--seq-len", "32",
            "--batch-size", "2", "--accum", "1", "--ckpt-every", "2", "--eval-every", "100", "--eval-tokens", "64",
            "--json"]
    cmd = [sys.executable, "-m", "labkit", "distill", *args]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run([*cmd, "--work-dir", str(tmp_path / "whole")], check=True, env=env, capture_output=True)
    work = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--work-dir", str(work)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not (work / "run" / "checkpoints" / "step-000004" / "trainer.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its second checkpoint"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (work / "model.safetensors").exists(), "the run finished before it was killed: nothing was resumed"
    done = subprocess.run([*cmd, "--work-dir", str(work), "--resume"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["steps"] == 30
    a, b = read_tensors(tmp_path / "whole"), read_tensors(work)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    curve = json.loads((work / "run" / "curve.json").read_text())["curve"]
    assert [c["step"] for c in curve] == list(range(1, 31))
