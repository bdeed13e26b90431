"""The command line: JSON outputs, one-line errors, the terminal chat."""
import json
import subprocess
import sys

import pytest


def labkit(*args, input_text=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "labkit", *args], capture_output=True, text=True,
                          input=input_text, timeout=timeout)


def test_help_lists_commands():
    out = labkit("--help")
    assert out.returncode == 0 and "eval" in out.stdout and "grade" in out.stdout


def test_unknown_command_is_one_line_error():
    out = labkit("frobnicate")
    assert out.returncode == 2 and "unknown command" in out.stderr and "Traceback" not in out.stderr


def test_info_json():
    out = labkit("info", "--json")
    info = json.loads(out.stdout)
    assert out.returncode == 0 and info["backends"]["torch"].startswith("cpu") and "cache_dir" in info


def test_eval_against_itself_is_exact():
    out = labkit("eval", "embedded", "--reference", "embedded", "--max-tokens", "128", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["tokens"] == 128 and result["kl"] == 0.0 and result["top1"] == 1.0
    assert 3 < result["ppl"] < 100


@pytest.mark.parametrize("args, message", [
    (["eval", "/no/such/folder"], "no such model folder"),
    (["eval", "--window", "1"], "--window"),
    (["grade", "ex_nope"], "unknown exercise"),
    (["chat", "--cli", "--temperature", "-1"], "temperature"),
])
def test_bad_input_is_one_clear_line(args, message):
    out = labkit(*args)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_terminal_chat_answers_and_exits():
    out = labkit("chat", "--cli", "--temperature", "0", "--max-tokens", "12",
                 input_text="What is the capital of France?\n/reset\n/exit\n")
    assert out.returncode == 0, out.stderr
    assert "assistant> " in out.stdout and "Paris" in out.stdout and "(conversation cleared)" in out.stdout
