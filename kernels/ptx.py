"""The few GPU instructions Numba does not spell, each with a plain-Python twin.

A memory-bound kernel lives or dies by how it loads: one 16-byte load per thread moves
four times the bytes of a 4-byte load for the same instruction, and keeps more bytes in
flight per thread. Numba has no vector loads, so `load_u32x4` emits the PTX instruction
`ld.global.nc.v4.u32` itself (`.nc`: through the read-only cache, fine for weights and
KV blocks that no thread writes while the kernel runs). `as_float` reinterprets bits
(the int4 -> float trick needs it), `halves` turns a word holding two fp16 values into
two float32, `rint` rounds half to even like `torch.round`, and `load_cg` reads past L1
(for values another block wrote during this launch), and `shfl_xor` exchanges a value
with another lane of the warp (the simulator has no warp shuffles of its own).

Under the CUDA simulator (`NUMBA_ENABLE_CUDASIM=1`) kernels are ordinary Python, so each
primitive also has a numpy twin with the same meaning; kernels call the names defined
here and run unchanged on both.
"""
from __future__ import annotations

import threading

import numpy as np

from labkit.kernels.launch import SIMULATOR

if SIMULATOR:

    def _u32(v) -> np.uint32:
        return np.uint32(int(v) & 0xFFFFFFFF)

    def load_u32x4(a, i):
        """Four consecutive 32-bit words a.flat[i : i + 4] (i a multiple of 4), as uint32."""
        flat = a.reshape(-1)
        return _u32(flat[i]), _u32(flat[i + 1]), _u32(flat[i + 2]), _u32(flat[i + 3])

    def load_u32x2(a, i):
        """Two consecutive 32-bit words a.flat[i : i + 2] (i even), as uint32."""
        flat = a.reshape(-1)
        return _u32(flat[i]), _u32(flat[i + 1])

    def load_u32(a, i):
        """One 32-bit word a.flat[i], as uint32."""
        return _u32(a.reshape(-1)[i])

    def as_float(u):
        """The float32 whose bits are the 32-bit integer u."""
        return np.array(_u32(u)).view(np.float32)[()]

    def halves(u):
        """The two fp16 values packed in word u (low half first), as float32."""
        pair = np.array([_u32(u)]).view(np.float16)
        return np.float32(pair[0]), np.float32(pair[1])

    def rint(x):
        """x rounded to the nearest integer, ties to even (as torch.round)."""
        return np.float32(np.rint(x))

    def load_cg(a, i):
        """a.flat[i], read from L2 (bypassing L1)."""
        return a.reshape(-1)[i]

    def shfl_xor(value, offset):
        """The `value` of lane (lane ^ offset) of this warp; every lane of the warp must call it.

        Simulated threads of a warp meet at a barrier, publish their values, and meet again
        before anyone may overwrite them.
        """
        me = threading.current_thread()
        block = me._manager
        warp, lane = divmod(me.thread_id, 32)
        with _warp_lock:
            if not hasattr(block, "labkit_warps"):
                block.labkit_warps = {}
            if warp not in block.labkit_warps:
                size = min(32, int(np.prod(block._block_dim)) - 32 * warp)
                block.labkit_warps[warp] = (threading.Barrier(size, timeout=120), {})
        barrier, slots = block.labkit_warps[warp]
        slots[lane] = value
        barrier.wait()
        got = slots[lane ^ offset]
        barrier.wait()
        return got

    _warp_lock = threading.Lock()

else:
    from llvmlite import ir
    from numba import cuda, types
    from numba.cuda.extending import intrinsic

    def _address(context, builder, array_type, array, index):
        """Byte address of a.flat[index] for a contiguous array (no bounds or sign checks)."""
        ary = context.make_array(array_type)(context, builder, array)
        data = builder.ptrtoint(ary.data, ir.IntType(64))
        offset = builder.mul(builder.sext(index, ir.IntType(64)) if index.type.width < 64 else index,
                             ir.Constant(ir.IntType(64), array_type.dtype.bitwidth // 8))
        return builder.add(data, offset)

    def _vector_load(n):
        @intrinsic
        def load(typingctx, a, i):
            ret = types.UniTuple(types.uint32, n) if n > 1 else types.uint32

            def codegen(context, builder, sig, args):
                i32 = ir.IntType(32)
                out_type = ir.LiteralStructType([i32] * n) if n > 1 else i32
                addr = _address(context, builder, sig.args[0], args[0], args[1])
                regs = ",".join(f"${k}" for k in range(n))
                vec = f".v{n}" if n > 1 else ""
                asm = ir.InlineAsm(ir.FunctionType(out_type, [ir.IntType(64)]),
                                   f"ld.global.nc{vec}.u32 {{{regs}}}, [${n}];" if n > 1
                                   else "ld.global.nc.u32 $0, [$1];",
                                   ",".join(["=r"] * n) + ",l")
                res = builder.call(asm, [addr])
                if n == 1:
                    return res
                return context.make_tuple(builder, ret, [builder.extract_value(res, k) for k in range(n)])

            return ret(a, i), codegen

        return load

    load_u32x4 = _vector_load(4)
    load_u32x2 = _vector_load(2)
    load_u32 = _vector_load(1)

    @intrinsic
    def as_float(typingctx, u):
        def codegen(context, builder, sig, args):
            return builder.bitcast(builder.trunc(args[0], ir.IntType(32)) if args[0].type.width > 32
                                   else args[0], ir.FloatType())

        return types.float32(u), codegen

    @intrinsic
    def halves(typingctx, u):
        ret = types.UniTuple(types.float32, 2)

        def codegen(context, builder, sig, args):
            word = args[0] if args[0].type.width == 32 else builder.trunc(args[0], ir.IntType(32))
            f32 = ir.FloatType()
            asm = ir.InlineAsm(ir.FunctionType(ir.LiteralStructType([f32, f32]), [ir.IntType(32)]),
                               "{ .reg .f16 lo, hi; mov.b32 {lo, hi}, $2; "
                               "cvt.f32.f16 $0, lo; cvt.f32.f16 $1, hi; }", "=f,=f,r")
            res = builder.call(asm, [word])
            return context.make_tuple(builder, ret, [builder.extract_value(res, 0),
                                                     builder.extract_value(res, 1)])

        return ret(u), codegen

    @cuda.jit(device=True, inline="always")
    def rint(x):
        return cuda.libdevice.rintf(x)

    @cuda.jit(device=True, inline="always")
    def load_cg(a, i):
        return cuda.ldcg(a, i)

    @cuda.jit(device=True, inline="always")
    def shfl_xor(value, offset):
        return cuda.shfl_xor_sync(0xFFFFFFFF, value, offset)
