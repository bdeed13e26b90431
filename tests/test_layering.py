"""Benchmarks sit on top of the library: no library module or notebook imports a bench module.

A bench module (`labkit/*/bench.py`, `kernels/bench.py`) is a script behind `labkit bench`;
what notebooks and other modules need from it lives in a library module (for example
`labkit.engine.workload`). This reads every module's import statements (no import is run).
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    """Dotted names a file imports: `import a.b` -> a.b; `from a import b` -> a and a.b."""
    return imported_names(path.read_text(), str(path))


def imported_names(source: str, filename: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def library_files() -> list[Path]:
    files = [*(ROOT / "labkit").rglob("*.py"), *(ROOT / "kernels").rglob("*.py")]
    return [f for f in files if f.name != "bench.py"]


def test_imported_modules_sees_both_import_forms(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import labkit.quant.bench\nfrom labkit.engine import bench\ndef g():\n    from x.bench import y\n")
    names = imported_modules(f)
    assert {"labkit.quant.bench", "labkit.engine.bench", "x.bench.y"} <= names


def test_no_library_module_imports_a_bench_module():
    files = library_files()
    assert len(files) > 50 and ROOT / "labkit" / "engine" / "workload.py" in files
    offenders = {str(f.relative_to(ROOT)): sorted(n for n in imported_modules(f) if "bench" in n.split("."))
                 for f in files}
    assert {f: names for f, names in offenders.items() if names} == {}


def notebook_imports(path: Path) -> set[str]:
    """Dotted names the code cells of a notebook import (IPython magics and shell lines skipped)."""
    import json

    cells = json.loads(path.read_text())["cells"]
    code = "\n".join(line for c in cells if c["cell_type"] == "code"
                     for line in "".join(c["source"]).splitlines() if not line.lstrip().startswith(("%", "!")))
    return imported_names(code, str(path))


def test_no_notebook_imports_a_bench_module():
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks
    offenders = {p.name: sorted(n for n in notebook_imports(p) if "bench" in n.split(".")) for p in notebooks}
    assert {name: names for name, names in offenders.items() if names} == {}


def test_the_library_below_never_imports_what_observes_or_serves_it():
    """DESIGN.md's one-way flow: models, quant, prune, distill, eval and engine (and the
    kernels) import nothing from profile, serve, grading or the CLI."""
    above = ("labkit.profile", "labkit.serve", "labkit.grading", "labkit.chat", "labkit.cli")
    below = [f for pkg in ("models", "quant", "prune", "distill", "eval", "engine") for f in (ROOT / "labkit" / pkg).rglob("*.py")]
    offenders = sorted(f"{f.relative_to(ROOT)} imports {name}"
                       for f in [*below, *(ROOT / "kernels").rglob("*.py")] if f.name != "bench.py"
                       for name in imported_modules(f) if any(name == a or name.startswith(a + ".") for a in above))
    assert not offenders, "\n".join(offenders)
