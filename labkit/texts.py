"""The texts shipped with labkit (`labkit/data/`): the evaluation text and the calibration text.

A leaf module, importing nothing from labkit: `labkit.eval` measures on one text and
`labkit.quant` calibrates on the other, and neither has to import the other for it.
"""
from __future__ import annotations

from importlib import resources


def eval_text() -> str:
    """The evaluation text shipped with labkit (prose on varied topics, written for it)."""
    return resources.files("labkit").joinpath("data/eval.txt").read_text()


def calibration_text() -> str:
    """The calibration text (separate from the evaluation text) used by AWQ and SmoothQuant."""
    return resources.files("labkit").joinpath("data/calib.txt").read_text()
