"""Where labkit keeps what it computes once: converted models, quantized checkpoints."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """LABKIT_CACHE, else $XDG_CACHE_HOME/labkit, else ~/.cache/labkit."""
    if os.environ.get("LABKIT_CACHE"):
        return Path(os.environ["LABKIT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "labkit"
