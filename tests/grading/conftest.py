"""Helpers for the grading tests, through the fixture `g`: grade an exercise's solution, its
stub, or the solution with one realistic mistake written into it, and list what failed."""
from pathlib import Path

import pytest

from labkit.grading import Report, grade, project_root


def solution(exercise: str) -> Report:
    return grade(exercise, project_root() / "solutions" / f"{exercise}.py")


def stub(exercise: str) -> Report:
    return grade(exercise, project_root() / "exercises" / f"{exercise}.py")


def variant(exercise: str, tmp_path: Path, old: str, new: str) -> Report:
    """The solution with `old` replaced by `new` (which must be there), graded."""
    source = (project_root() / "solutions" / f"{exercise}.py").read_text()
    assert old in source, f"the solution no longer contains {old!r}"
    path = tmp_path / f"{exercise}.py"
    path.write_text(source.replace(old, new))
    return grade(exercise, path)


def failed(report: Report) -> dict[str, str]:
    """check name -> message, for the checks that failed."""
    return {r.name: r.message for r in report.results if not r.passed}


@pytest.fixture(scope="session")
def g():
    """The helpers above (tests run with --import-mode=importlib, so they cannot import conftest)."""
    import sys

    return sys.modules[__name__]
