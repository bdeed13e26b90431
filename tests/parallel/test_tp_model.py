"""The split model itself, outside the engine, in float32: what `LLM(..., tp=N)` runs on a GPU
for a quantized checkpoint (on a CPU the engine repacks quantized layers for bfloat16 kernels,
labkit.quant.cpu, whose rounding differs with the split; test_tp_llm covers that path)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow   # two Python processes with torch


@pytest.mark.parametrize("folder", ["full_dir", "int4_dir"])
def test_split_model_equals_the_whole_in_fp32(folder, request):
    path = request.getfixturevalue(folder)
    r = subprocess.run([sys.executable, str(Path(__file__).parent / "sharded_forward.py"), str(path), "2"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    # float32 partial sums added in another order: a few ulps of the largest logit (measured ~1e-6)
    assert out["diff"] <= 1e-5 * out["scale"], out
    assert out["tokens"] == out["whole"]
