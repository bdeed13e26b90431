"""Immediate feedback inside a notebook: `check_exercise("ex01_rmsnorm")`.

The notebook calls the learner's file (or solutions/ under LABKIT_USE_SOLUTIONS=1, the same
choice `load_exercise` makes), runs the exercise's graded checks and shows one line: the
score and, when something fails, the first failing check's message, which says what to fix.

A cell that calls an exercise function not written yet stops "Run All" there (what follows
needs its results) with the stub's own message, which says what to write, where, and which
section explains it, instead of a traceback into the exercise file.
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
            todo = list(dict.fromkeys(x.todo for x in failed if x.todo))
            what = f"still to write: {', '.join(todo)}" if todo else "some functions still raise NotImplementedError"
            return f"TODO {r.exercise}: {r.score}/{r.max}, {what} (in {Path(r.impl).name})"
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


def unfinished_note(error: NotImplementedError) -> str | None:
    """What a notebook shows when `error` comes from a stub in exercises/ (None otherwise)."""
    from labkit.grading import unfinished_function

    folder = project_root() / "exercises"
    for path in sorted(folder.glob("ex*.py")):
        name = unfinished_function(error, path)
        if name:
            # the CUDA simulator prefixes the thread ids: "tid=[0, 0, 0] ctaid=[0, 0, 0]: message"
            message = str(error).split("]: ", 1)[-1] if str(error).startswith("tid=") else str(error)
            return (f"NotImplementedError: {message or f'{name} is not written yet'}\n"
                    f"This cell needs {name} from exercises/{path.name}. Write it and run the cell again, or "
                    "use the reference answers: run %env LABKIT_USE_SOLUTIONS=1, then the notebook from the top.")
    return None


def _show_unfinished(shell, etype, value, tb, tb_offset=None):
    """IPython's handler for NotImplementedError: the stub's note, or the usual traceback."""
    note = unfinished_note(value)
    stb = [note] if note else shell.InteractiveTB.structured_traceback(etype, value, tb, tb_offset=tb_offset)
    shell._showtraceback(etype, value, stb)  # shown as the cell's error: "Run All" stops here


def show_unfinished_exercises_briefly() -> None:
    """Inside IPython/Jupyter, show NotImplementedError from a stub as one note (no-op elsewhere)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None and not shell.custom_exceptions:
        shell.set_custom_exc((NotImplementedError,), _show_unfinished)
