"""The grader: solutions score full marks, stubs zero, broken files a message, not a crash."""
import pytest

from labkit.grading import exercise_names, grade, project_root

EXERCISES = exercise_names()


def test_there_are_graded_exercises():
    assert len(EXERCISES) >= 3


@pytest.mark.parametrize("name", EXERCISES)
def test_solution_scores_full_marks(name):
    report = grade(name, project_root() / "solutions" / f"{name}.py")
    failed = [(r.name, r.message) for r in report.results if not r.passed]
    assert report.max > 0 and report.score == report.max, failed


@pytest.mark.parametrize("name", EXERCISES)
def test_stub_scores_zero(name):
    report = grade(name, project_root() / "exercises" / f"{name}.py")
    assert report.score == 0 and all(r.message == "not implemented yet" for r in report.results)


def test_a_file_that_does_not_import_scores_zero_with_a_message(tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text("def f(:\n")
    report = grade(EXERCISES[0], bad)
    assert report.score == 0 and "could not import" in report.results[0].message
