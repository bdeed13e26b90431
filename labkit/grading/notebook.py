"""Immediate feedback inside a notebook: `check_exercise("ex01_rmsnorm")`.

The notebook calls the learner's file (or solutions/ under LABKIT_USE_SOLUTIONS=1, the same
choice `load_exercise` makes), runs the exercise's graded checks and shows one line: the
score and, when something fails, the first failing check's message, which says what to fix.
"""
from __future__ import annotations

import os
from pathlib import Path

from labkit.grading import Report, grade, project_root


def exercise_path(name: str) -> Path:
    """The file a notebook grades: solutions/ under LABKIT_USE_SOLUTIONS=1, else exercises/."""
    folder = "solutions" if os.environ.get("LABKIT_USE_SOLUTIONS") == "1" else "exercises"
    return project_root() / folder / f"{name}.py"


class Feedback:
    """A report that displays as one line (its `report` holds every check)."""

    def __init__(self, report: Report):
        self.report = report

    @property
    def passed(self) -> bool:
        return self.report.score == self.report.max

    def line(self) -> str:
        r = self.report
        if self.passed:
            return f"PASS {r.exercise}: {r.score}/{r.max}, all {len(r.results)} checks pass"
        failed = [x for x in r.results if not x.passed]
        if all(x.message == "not implemented yet" for x in failed):
            return f"TODO {r.exercise}: {r.score}/{r.max}, {len(failed)} functions still raise NotImplementedError ({Path(r.impl).name})"
        first = failed[0]
        more = f" (+{len(failed) - 1} more failing)" if len(failed) > 1 else ""
        return f"FAIL {r.exercise}: {r.score}/{r.max}; {first.name}: {first.message}{more}"

    def __repr__(self) -> str:
        return self.line()

    def _repr_html_(self) -> str:
        import html

        color = "green" if self.passed else "#b00"
        return f"<pre style='color:{color}'>{html.escape(self.line())}</pre>"


def check_exercise(name: str, impl: str | Path | None = None) -> Feedback:
    """Grade `name` against the notebook's implementation (or `impl`) and show one line."""
    return Feedback(grade(name, impl or exercise_path(name)))
