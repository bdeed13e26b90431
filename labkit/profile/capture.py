"""Capture what a block writes to stderr, at the file-descriptor level.

Native code (PyTorch's C++ profiler logs `profiler_start` / `profiler_stop` lines, for
instance) writes to file descriptor 2 directly, past Python's `sys.stderr`; a notebook shows
those lines as red output, as if something had failed. `capture_stderr()` points fd 2 at a
temporary file for the duration of a block (Python's `sys.stderr` too) and keeps the text:

    with capture_stderr() as log:
        prof = profile_decode(...)
    log.text      # what was written, should anyone want to read it

Exceptions pass through untouched (Python raises them, it does not print them), and fd 2 is
restored even when the block raises.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Iterator


@dataclass
class Captured:
    """The text written to stderr inside a `capture_stderr()` block (filled in when it ends)."""
    text: str = ""


@contextlib.contextmanager
def capture_stderr() -> Iterator[Captured]:
    """Redirect file descriptor 2 and `sys.stderr` into one `Captured` for the block's duration."""
    captured = Captured()
    python_err = io.StringIO()
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as native, contextlib.redirect_stderr(python_err):
            os.dup2(native.fileno(), 2)
            try:
                yield captured
            finally:
                os.dup2(saved, 2)
                native.seek(0)
                captured.text = native.read().decode(errors="replace") + python_err.getvalue()
    finally:
        os.close(saved)
