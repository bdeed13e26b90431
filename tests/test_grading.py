"""The grader: solutions score full marks, stubs zero, broken files a message, not a crash; every
stub says what to write, where, and which notebook section explains it."""
import ast
import json
import re

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
    assert all(r.todo for r in report.results), "each failure names the stub function that raised"


def _stub_messages(name: str) -> dict[str, str]:
    """function (qualified) -> the message of the NotImplementedError it raises."""
    out = {}
    tree = ast.parse((project_root() / "exercises" / f"{name}.py").read_text())
    for node in ast.walk(tree):
        for fn in (n for n in getattr(node, "body", []) if isinstance(n, ast.FunctionDef)):
            qual = f"{node.name}.{fn.name}" if isinstance(node, ast.ClassDef) else fn.name
            for r in (n for n in ast.walk(fn) if isinstance(n, ast.Raise)):
                exc = r.exc
                if isinstance(exc, ast.Call) and getattr(exc.func, "id", "") == "NotImplementedError":
                    out[qual] = exc.args[0].value if exc.args and isinstance(exc.args[0], ast.Constant) else ""
                elif getattr(exc, "id", "") == "NotImplementedError":
                    out[qual] = ""
    return out


@pytest.mark.parametrize("name", EXERCISES)
def test_every_stub_says_what_to_write_where_and_which_section(name):
    messages = _stub_messages(name)
    assert messages, f"exercises/{name}.py has no stub raising NotImplementedError"
    chapter = name[2:4]
    notebook = next((project_root() / "notebooks").glob(f"{chapter}_*.ipynb"), None)
    assert notebook, f"no notebook {chapter}_*.ipynb for {name}"
    headings = [line.lstrip("#").strip() for cell in json.loads(notebook.read_text())["cells"]
                if cell["cell_type"] == "markdown" for line in "".join(cell["source"]).splitlines()
                if line.startswith("#")]
    for fn, message in messages.items():
        assert fn.split(".")[-1] in message and f"exercises/{name}.py" in message, \
            f"{name}.{fn}: the NotImplementedError should name the function and its file, got {message!r}"
        assert f"notebook {chapter}" in message and any(h in message for h in headings), (
            f"{name}.{fn}: the message should name notebook {chapter} and one of its section headings "
            f"({headings}), got {message!r}")


@pytest.mark.parametrize("name", EXERCISES)
def test_its_chapter_notebook_checks_the_exercise(name):
    notebooks = list((project_root() / "notebooks").glob(f"{name[2:4]}_*.ipynb"))
    code = "".join("".join(c["source"]) for c in json.loads(notebooks[0].read_text())["cells"]) if notebooks else ""
    assert re.search(rf"""check_exercise\(["']{name}["']""", code), \
        f"notebook {name[2:4]} should give feedback on {name} with check_exercise({name!r})"


def test_a_file_that_does_not_import_scores_zero_with_a_message(tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text("def f(:\n")
    report = grade(EXERCISES[0], bad)
    assert report.score == 0 and "could not import" in report.results[0].message
