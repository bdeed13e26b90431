"""Helpers for the grading tests, through the fixture `g`: grade an exercise's solution, its
stub, or the solution with one realistic mistake written into it, and say what failed."""
from pathlib import Path

import pytest

from labkit.grading import Report, grade, project_root


def solution(exercise: str) -> Report:
    return grade(exercise, project_root() / "solutions" / f"{exercise}.py")


def stub(exercise: str) -> Report:
    return grade(exercise, project_root() / "exercises" / f"{exercise}.py")


def variant(exercise: str, tmp_path: Path, old: str, new: str, *more: str) -> Report:
    """The solution with `old` replaced by `new` (which must be there), and each further
    (old, new) pair of `more` likewise: one learner's mistake, graded."""
    source = (project_root() / "solutions" / f"{exercise}.py").read_text()
    pairs = [(old, new), *zip(more[::2], more[1::2])]
    for a, b in pairs:
        assert a in source, f"the solution no longer contains {a!r}"
        source = source.replace(a, b)
    path = tmp_path / f"{exercise}.py"
    path.write_text(source)
    return grade(exercise, path)


def failed(report: Report) -> dict[str, str]:
    """check name -> message, for the checks that failed."""
    return {r.name: r.message for r in report.results if not r.passed}


def assert_loses(report: Report, check: str, hint: str | None = None) -> None:
    """The mistake costs points, `check` catches it, and its message says `hint` (in a learner's words)."""
    lost = failed(report)
    assert report.score < report.max and check in lost, f"{check} should fail; failures: {lost}"
    if hint:
        assert hint in lost[check], lost[check]


def assert_full_and_zero(exercise: str) -> None:
    """The reference answer scores full marks, the stub zero."""
    report = solution(exercise)
    assert report.score == report.max > 0, failed(report)
    report = stub(exercise)
    assert report.score == 0 and all(r.message == "not implemented yet" for r in report.results)


@pytest.fixture(scope="session")
def g():
    """The helpers above (tests run with --import-mode=importlib, so they cannot import conftest)."""
    import sys

    return sys.modules[__name__]
