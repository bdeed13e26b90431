"""`labkit grade [EXERCISE ...] [--impl PATH] [--solutions] [--json]`."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from labkit.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("exercises", nargs="*", metavar="EXERCISE", help="e.g. ex01_rmsnorm (default: all)")
    p.add_argument("--impl", metavar="PATH", help="grade this file (one exercise; its name is taken from the file if not given)")
    p.add_argument("--solutions", action="store_true", help="grade solutions/ instead of exercises/")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")


def run(args) -> int:
    from labkit.grading import exercise_names, format_table, grade, project_root

    known = exercise_names()
    names = list(args.exercises)
    if args.impl:
        if not Path(args.impl).is_file():
            raise UserError(f"no such file: {args.impl}")
        names = names or [Path(args.impl).stem]
        if len(names) != 1:
            raise UserError("--impl grades one exercise at a time")
    for name in names:
        if name not in known:
            raise UserError(f"unknown exercise {name!r}; known: {', '.join(known)}")
    names = names or known
    folder = project_root() / ("solutions" if args.solutions else "exercises")
    reports = [grade(n, args.impl or folder / f"{n}.py") for n in names]
    if args.json:
        print(json.dumps({"score": sum(r.score for r in reports), "max": sum(r.max for r in reports),
                          "exercises": [r.to_dict() for r in reports]}))
    else:
        print(format_table(reports))
    return 0
