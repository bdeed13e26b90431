"""The exercise grader behind `labkit grade`.

An exercise is a file `exercises/exNN_topic.py` of stubs; `solutions/exNN_topic.py` holds the
reference answers. Its graded checks live in `labkit/grading/checks/exNN_topic.py`: plain
functions decorated with `@check(points=N)` that take the implementation module and raise
`AssertionError("what is wrong")` when it misbehaves. The grader loads any file as that
module (`--impl`), runs every check, and reports points per check (minitorch's idea, without
the pytest machinery, so that a learner's broken import costs one line of feedback, not a
traceback).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Callable

Check = Callable[[ModuleType], None]


def check(points: int) -> Callable[[Check], Check]:
    """Mark a function as a graded check worth `points`."""

    def mark(fn: Check) -> Check:
        fn.points = points  # type: ignore[attr-defined]
        return fn

    return mark


def project_root() -> Path:
    """The folder that holds `exercises/` and `solutions/` (override with LABKIT_ROOT)."""
    if os.environ.get("LABKIT_ROOT"):
        return Path(os.environ["LABKIT_ROOT"])
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for folder in (start, *start.parents):
            if (folder / "exercises").is_dir() and (folder / "solutions").is_dir():
                return folder
    raise FileNotFoundError("cannot find the exercises/ and solutions/ folders; set LABKIT_ROOT")


def exercise_names() -> list[str]:
    """Every exercise that has graded checks, in course order."""
    from labkit.grading import checks

    return sorted(m.name for m in pkgutil.iter_modules(checks.__path__) if m.name.startswith("ex"))


def load_impl(path: str | Path, name: str | None = None) -> ModuleType:
    """Import a Python file as a module, whatever its folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such implementation file: {path}")
    spec = importlib.util.spec_from_file_location(name or f"impl_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look the module up by name
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def load_exercise(name: str) -> ModuleType:
    """The module a notebook should call: solutions/ when LABKIT_USE_SOLUTIONS=1, else exercises/.

    Inside a notebook, a cell that calls a function not written yet then stops with the stub's
    own message (what to write, where, which section explains it) instead of a traceback.
    """
    from labkit.grading.notebook import show_unfinished_exercises_briefly

    show_unfinished_exercises_briefly()
    folder = "solutions" if os.environ.get("LABKIT_USE_SOLUTIONS") == "1" else "exercises"
    return load_impl(project_root() / folder / f"{name}.py", f"{folder}_{name}")


def checks_of(exercise: str) -> list[Check]:
    """The graded checks of one exercise, in the order they are written."""
    if exercise not in exercise_names():
        raise KeyError(f"unknown exercise {exercise!r}; known: {', '.join(exercise_names())}")
    module = importlib.import_module(f"labkit.grading.checks.{exercise}")
    found = [f for f in vars(module).values() if callable(f) and hasattr(f, "points")]
    return sorted(found, key=lambda f: f.__code__.co_firstlineno)


@dataclass
class Result:
    name: str
    points: int
    earned: int
    passed: bool
    message: str
    seconds: float
    todo: str = ""  # the function that raised NotImplementedError (a stub not written yet)


@dataclass
class Report:
    exercise: str
    impl: str
    results: list[Result] = field(default_factory=list)

    @property
    def score(self) -> int:
        return sum(r.earned for r in self.results)

    @property
    def max(self) -> int:
        return sum(r.points for r in self.results)

    def to_dict(self) -> dict:
        return {"exercise": self.exercise, "impl": self.impl, "score": self.score,
                "max": self.max, "tests": [asdict(r) for r in self.results]}


def unfinished_function(error: BaseException, impl_file: str | Path) -> str:
    """The name of the function of `impl_file` that raised `error` (innermost), or ''."""
    impl_file = Path(impl_file).resolve()
    codes = [frame.f_code for frame, _ in traceback.walk_tb(error.__traceback__)]
    names = [getattr(c, "co_qualname", c.co_name) for c in codes if Path(c.co_filename).resolve() == impl_file]
    return names[-1] if names else ""


def _run(fn: Check, impl: ModuleType) -> tuple[bool, str, str]:
    """(passed, message, the stub function that is not written yet or '')."""
    try:
        fn(impl)
    except NotImplementedError as e:
        return False, "not implemented yet", unfinished_function(e, impl.__file__)
    except AssertionError as e:
        return False, str(e) or "assertion failed", ""
    except Exception as e:  # a learner's bug is feedback, not a crash of the grader
        where = traceback.extract_tb(e.__traceback__)[-1]
        return False, f"{type(e).__name__}: {e} (at {Path(where.filename).name}:{where.lineno})", ""
    return True, "ok", ""


def grade(exercise: str, impl_path: str | Path) -> Report:
    """Run every check of `exercise` against the file at `impl_path`."""
    report = Report(exercise, str(impl_path))
    try:
        impl = load_impl(impl_path)
    except Exception as e:
        msg = f"could not import {impl_path}: {type(e).__name__}: {e}"
        report.results = [Result(f.__name__, f.points, 0, False, msg, 0.0) for f in checks_of(exercise)]
        return report
    for fn in checks_of(exercise):
        start = time.perf_counter()
        ok, message, todo = _run(fn, impl)
        report.results.append(Result(fn.__name__, fn.points, fn.points if ok else 0, ok, message,
                                     round(time.perf_counter() - start, 3), todo))
    return report


def format_table(reports: list[Report]) -> str:
    """A plain-text table: one row per check, a total per exercise and overall."""
    lines = []
    for rep in reports:
        lines.append(f"{rep.exercise}  ({rep.impl})")
        for r in rep.results:
            mark = "PASS" if r.passed else "FAIL"
            lines.append(f"  {mark}  {r.earned:>2}/{r.points:<2} {r.name:<40} {'' if r.passed else r.message}")
        lines.append(f"  total {rep.score}/{rep.max}")
    total, most = sum(r.score for r in reports), sum(r.max for r in reports)
    lines.append(f"score {total}/{most}")
    return "\n".join(lines)
