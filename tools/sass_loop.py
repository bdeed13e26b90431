"""The main loop of w4a16_tc_async in sm_90 machine code, counted without a GPU.

    python tools/sass_loop.py [--tiles 4,1,4,3,3,2 ...] [--cuda DIR] [--cuobjdump PATH] [--out DIR]

An issue-bound kernel gets faster by issuing fewer instructions, and counting them needs no
GPU: Numba compiles the kernel to PTX for compute capability 9.0 (a stand-in device answers
Numba's question about the current GPU), `ptxas` makes the sm_90 machine code and `cuobjdump`
prints it. The loop that holds the tensor-core instructions (HMMA) is the one that streams
the weights; its length and its opcodes, per tile, go to stdout (and DIR/sass_loop.json).
Each tile is `w4a16_tc_async.make_kernel`'s numbers: (B tiles of 8 rows, warps_n, warps_k,
stages, min_blocks, per_warp), the last five as `plan` gives them.

What it needs, from PyPI (no GPU, no CUDA install): `nvidia-cuda-nvcc` (ptxas),
`nvidia-nvvm` and `nvidia-cuda-nvrtc` (Numba's compiler), installed into one folder, `--cuda`
(their `nvidia/cu13`: ptxas in bin/, the libraries in lib/, which must also be on
LD_LIBRARY_PATH); and a `cuobjdump`, e.g. the one in the `triton` wheel
(triton/backends/nvidia/bin). The counts are static: a branch taken once per group of K
(the scales' constants) counts as if it ran every time.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import types as pytypes
from pathlib import Path

os.environ["NUMBA_ENABLE_CUDASIM"] = "0"   # the real compiler, before anything imports numba.cuda

DEFAULT_TILES = ("1,1,4,5,4,2", "2,1,4,4,4,2", "3,2,4,2,1,2", "4,1,4,3,3,2", "4,2,4,2,1,2")


def compile_sass(tile: tuple[int, ...], cuda_dir: Path, cuobjdump: str, work: Path) -> tuple[str, str]:
    """(ptxas's resource line, the SASS) of w4a16_tc_async's kernel for `tile`, for sm_90."""
    import numba.cuda.api as api
    import numba.cuda.compiler as compiler
    import numba.cuda.dispatcher as dispatcher
    from numba import cuda, types

    sm90 = pytypes.SimpleNamespace(compute_capability=(9, 0))
    for module in (api, compiler, dispatcher):   # (Numba asks the current device for its compute capability)
        module.get_current_device = lambda: sm90
    from labkit.kernels import w4a16_tc_async

    kernel = w4a16_tc_async.make_kernel(*tile)
    i32 = [types.Array(types.int32, dims, "C") for dims in (1, 2)]
    signature = (i32[1], i32[1], i32[1], i32[1], types.int64, types.int64, types.Array(types.float32, 1, "C"),
                 i32[0], types.Array(types.float16, 1, "C"))
    threads = 32 * tile[1] * tile[2]
    ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=(9, 0), launch_bounds=(threads, tile[4]))
    name = "_".join(map(str, tile))
    (work / f"{name}.ptx").write_text(ptx)
    ptxas = subprocess.run([str(cuda_dir / "bin" / "ptxas"), "-arch=sm_90", "-O3", "-v", str(work / f"{name}.ptx"),
                            "-o", str(work / f"{name}.cubin")], capture_output=True, text=True, check=True)
    used = next((line.split("info    : ")[-1] for line in ptxas.stderr.splitlines() if "Used" in line), "")
    sass = subprocess.run([cuobjdump, "--dump-sass", str(work / f"{name}.cubin")], capture_output=True, text=True,
                          check=True).stdout
    return used, sass


def opcode(text: str) -> str:
    """`@P0 LDGSTS.E.BYPASS.128 [R1], ...` -> `LDGSTS`."""
    return re.sub(r"^@!?U?P\w+\s+", "", text).split()[0].split(".")[0]


def hmma_loop(sass: str) -> dict:
    """The backward branch's body that holds the most HMMA instructions: its length and opcodes."""
    code = [(int(m.group(1), 16), m.group(2).strip()) for m in
            re.finditer(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", sass)]
    best: dict = {"instructions": 0, "HMMA": 0, "opcodes": {}}
    for at, text in code:
        target = re.search(r"BRA\s.*?0x([0-9a-f]+)", text)
        if target and int(target.group(1), 16) < at:
            body = [t for a, t in code if int(target.group(1), 16) <= a <= at]
            ops = collections.Counter(opcode(t) for t in body)
            if ops["HMMA"] > best["HMMA"]:
                best = {"instructions": len(body), "HMMA": ops["HMMA"], "opcodes": dict(ops.most_common())}
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiles", default=";".join(DEFAULT_TILES),
                   help="tiles separated by ';', each 6 numbers joined by ',' (default: the plan's at 2-32 rows)")
    p.add_argument("--cuda", type=Path, required=True, help="folder with bin/ptxas (nvidia-cuda-nvcc's nvidia/cu13)")
    p.add_argument("--cuobjdump", required=True, help="a cuobjdump executable")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for spec in args.tiles.split(";"):
            tile = tuple(int(v) for v in spec.split(","))
            if len(tile) != 6:
                p.error(f"a tile is 6 numbers (tiles, warps_n, warps_k, stages, min_blocks, per_warp), got {spec!r}")
            used, sass = compile_sass(tile, args.cuda, args.cuobjdump, Path(work))
            loop = hmma_loop(sass)
            rows.append({"tile": list(tile), "ptxas": used, **loop})
            top = ", ".join(f"{k} {v}" for k, v in list(loop["opcodes"].items())[:10])
            print(f"tile {spec:<14} {loop['instructions']:>4} instructions, {loop['HMMA']:>2} HMMA per turn of the "
                  f"loop; {used}\n    {top}", flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "sass_loop.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
