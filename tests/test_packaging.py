"""Set-up files agree with each other; kernels/ never shadows Hugging Face's `kernels`."""
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[;]", req, maxsplit=1)[0].strip().lower().replace("_", "-")


def _norm(req: str) -> str:
    return req.replace(" ", "").lower().replace("_", "-")


def test_environment_yml_agrees_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r): _norm(r) for r in project["dependencies"]}
    for extra in ("lab", "demo"):
        wanted.update({_name(r): _norm(r) for r in project["optional-dependencies"][extra]})
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    have = {_name(r): _norm(r) for r in pip}
    assert have == wanted


def test_every_package_folder_is_packaged():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "labkit").rglob("__init__.py")}
    found.add("labkit.kernels")
    assert found <= listed, f"add to pyproject packages: {sorted(found - listed)}"


def test_ci_runs_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text() and "make demo" in (ROOT / "README.md").read_text()


def test_python_m_labkit_hides_the_checkout_kernels(tmp_path, monkeypatch):
    from labkit.__main__ import drop_checkout_root

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    assert drop_checkout_root(["", str(root), str(tmp_path)]) == [str(tmp_path)]  # "" is the root: cwd above
    assert drop_checkout_root([str(tmp_path)]) == [str(tmp_path)]
    # `python -c`, like `python -m`, puts the current folder first on sys.path
    code = ("import os, sys\n"
            "from labkit.__main__ import drop_checkout_root\n"
            f"on_path = lambda: {str(root)!r} in [os.path.abspath(p or os.curdir) for p in sys.path]\n"
            "print(on_path())\n"
            "sys.path[:] = drop_checkout_root(sys.path)\n"
            "print(on_path())\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["True", "False"]
