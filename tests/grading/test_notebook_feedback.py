"""`check_exercise`: the one-line feedback notebooks show after an exercise; a cell that needs
an unfinished exercise stops with the stub's message, not a traceback."""
import pytest

from labkit.grading import project_root
from labkit.grading.notebook import check_exercise, exercise_path


def test_solutions_pass(monkeypatch):
    monkeypatch.setenv("LABKIT_USE_SOLUTIONS", "1")
    assert exercise_path("ex01_top_p").parent.name == "solutions"
    fb = check_exercise("ex01_top_p")
    assert fb.passed
    assert repr(fb).startswith(f"PASS ex01_top_p: {fb.report.max}/{fb.report.max}")
    assert "green" in fb._repr_html_()


def test_stubs_say_todo(monkeypatch):
    monkeypatch.delenv("LABKIT_USE_SOLUTIONS", raising=False)
    assert exercise_path("ex00_decode_cost").parent.name == "exercises"
    fb = check_exercise("ex00_decode_cost")
    assert not fb.passed
    assert repr(fb).startswith(f"TODO ex00_decode_cost: 0/{fb.report.max}, still to write: kv_bytes_per_token, ")
    fb = check_exercise("ex05_awq_search")   # two functions, six checks: count the functions
    assert repr(fb) == (f"TODO ex05_awq_search: 0/{fb.report.max}, still to write: awq_scales, search_scale "
                        "(in ex05_awq_search.py)")


def test_a_half_done_exercise_lists_only_what_is_left(tmp_path):
    source = (project_root() / "solutions" / "ex04_rtn.py").read_text()
    body = source[source.index("def dequantize_groupwise"):]
    path = tmp_path / "ex04_rtn.py"
    path.write_text(source.replace(body, body.split(":\n", 1)[0] + ":\n    raise NotImplementedError('later')\n"))
    line = repr(check_exercise("ex04_rtn", path))
    assert "still to write: dequantize_groupwise (" in line and "quantize_groupwise," not in line, line


def test_a_wrong_answer_names_the_first_failing_check(tmp_path):
    source = (project_root() / "solutions" / "ex01_rmsnorm.py").read_text()
    path = tmp_path / "mine.py"
    old = "h / torch.sqrt(h.pow(2).mean(dim=-1, keepdim=True) + eps)"
    assert old in source
    path.write_text(source.replace(old, "h / (torch.sqrt(h.pow(2).mean(dim=-1, keepdim=True)) + eps)"))
    line = repr(check_exercise("ex01_rmsnorm", path))
    assert line.startswith("FAIL ex01_rmsnorm:")
    assert "inside the square root" in line


def test_a_cell_that_needs_an_unfinished_stub_stops_with_its_message(monkeypatch, capsys):
    """In IPython the cell fails (so "Run All" stops), showing the stub's own words, no traceback."""
    interactiveshell = pytest.importorskip("IPython.core.interactiveshell")
    monkeypatch.delenv("LABKIT_USE_SOLUTIONS", raising=False)
    shell = interactiveshell.InteractiveShell.instance()
    try:
        result = shell.run_cell("import torch, labkit.grading\n"
                                "ex05 = labkit.grading.load_exercise('ex05_awq_search')\n"
                                "ex05.awq_scales(torch.ones(4), 0.5)")
        shown = capsys.readouterr().out
        assert isinstance(result.error_in_exec, NotImplementedError)
        assert "write awq_scales" in shown and "notebook 05, section" in shown, shown
        assert "This cell needs awq_scales from exercises/ex05_awq_search.py" in shown, shown
        assert "Traceback" not in shown, shown
        result = shell.run_cell("raise NotImplementedError('not an exercise')")   # anything else: the usual traceback
        assert isinstance(result.error_in_exec, NotImplementedError) and "Traceback" in capsys.readouterr().out
    finally:
        shell.set_custom_exc((), None)
        interactiveshell.InteractiveShell.clear_instance()
