"""`check_exercise`: the one-line feedback notebooks show after an exercise."""
from labkit.grading import project_root
from labkit.grading.notebook import check_exercise, exercise_path


def test_solutions_pass(monkeypatch):
    monkeypatch.setenv("LABKIT_USE_SOLUTIONS", "1")
    assert exercise_path("ex01_top_p").parent.name == "solutions"
    fb = check_exercise("ex01_top_p")
    assert fb.passed
    assert repr(fb).startswith("PASS ex01_top_p: 12/12")
    assert "green" in fb._repr_html_()


def test_stubs_say_todo(monkeypatch):
    monkeypatch.delenv("LABKIT_USE_SOLUTIONS", raising=False)
    assert exercise_path("ex00_decode_cost").parent.name == "exercises"
    fb = check_exercise("ex00_decode_cost")
    assert not fb.passed
    assert repr(fb).startswith("TODO ex00_decode_cost: 0/12")


def test_a_wrong_answer_names_the_first_failing_check(tmp_path):
    source = (project_root() / "solutions" / "ex01_rmsnorm.py").read_text()
    path = tmp_path / "mine.py"
    old = "h / torch.sqrt(h.pow(2).mean(dim=-1, keepdim=True) + eps)"
    assert old in source
    path.write_text(source.replace(old, "h / (torch.sqrt(h.pow(2).mean(dim=-1, keepdim=True)) + eps)"))
    line = repr(check_exercise("ex01_rmsnorm", path))
    assert line.startswith("FAIL ex01_rmsnorm:")
    assert "inside the square root" in line
