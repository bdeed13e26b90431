"""The few GPU instructions Numba does not spell, each with a plain-Python twin.

A memory-bound kernel lives or dies by how it loads: one 16-byte load per thread moves
four times the bytes of a 4-byte load for the same instruction, and keeps more bytes in
flight per thread. Numba has no vector loads, so `load_u32x4` emits the PTX instruction
`ld.global.nc.v4.u32` itself (`.nc`: through the read-only cache, fine for weights and
KV blocks that no thread writes while the kernel runs), and `store_u32x4` the 16-byte store
`st.global.v4.u32` (a warp's 2-byte stores 16 bytes apart write its 512 bytes piecemeal);
`store_u32` stores a word's bits into any 4-byte array (a cache of int32 words).
`load_u32x4_once` (and its 8- and 4-byte twins) is the same load marked "last use"
(`ld.global.lu`), for weights streamed once: besides the cache hint, ptxas leaves these
loads where the kernel issues them, where it sinks `.nc` loads next to their first use and a
register ring of loads in flight collapses (seen in the SASS of the GEMV; docs/benchmarks.md
has the timings). `as_float` reinterprets bits
(the int4 -> float trick needs it), `halves` turns a word holding two fp16 values into
two float32 and `pack_halves` two float32 into such a word (rounded to nearest, as torch
rounds a float32 result to fp16), `exp2_approx` and `rcp_approx` are the fast 2**x and 1/x
(SiLU inside a GEMV's inner loop, where a full-precision divide costs registers), `rint` rounds half to even like `torch.round`, and `load_cg` and
`load_cg_u32x4` read past L1 (for values another block wrote during this launch), and `shfl_xor` exchanges a value
with another lane of the warp (the simulator has no warp shuffles of its own).

Two instructions overlap a kernel with its neighbours in the stream (programmatic dependent
launch, sm_90; `launch.launch(..., overlap=True)` sets it up): `wait_for_previous_grid`
(`griddepcontrol.wait`) blocks until the kernel launched before this one has finished and
its writes are visible, so a kernel may issue the loads that do not depend on it (weights)
first; `allow_next_grid` (`griddepcontrol.launch_dependents`) lets the next kernel start
launching while this one drains. Launched the ordinary way, both do nothing. The wait
returns 0, to be added to the indices of the loads that must come after it: the loads here
are inline assembly the compiler may move, except past a value they depend on.

The tensor-core kernel (w4a16_tc.py) adds `prmt` (pick 4 of 8 bytes), `lop3_and_or` (one
instruction for (a & b) | c), `hfma2`/`hmul2` (two fp16 operations in one word) and
`mma_16816` (one warp multiplies a 16 x 16 fp16 tile by a 16 x 8 one, fp32 accumulators).
It stages its weights in shared memory with asynchronous copies (sm_80 and later):
`cp_async16` starts a 16-byte copy from global to shared memory that holds no register
while in flight (`cp.async.cg`, past L1; a false `valid` fills zeros and reads nothing).
Its source is a byte address from `address(a, i)`, to which a kernel adds byte counts as it
walks along an array: computed from an index at every copy, as Numba does (64-bit multiply,
sign extension, bounds of the index), the address took most of the instructions of the copy
loop (docs/benchmarks.md). The shared side, and every read of shared memory below, takes a
32-bit shared-window byte address: `shared_address(a)` gives a shared array's (once per
thread), and a kernel adds byte counts to it. A constant count becomes the instruction's
own offset (`LDS R, [R + 0x30]`); indexing the array instead, Numba's 64-bit arithmetic and its
check for negative indices cost more instructions than the reads themselves.
`cp_async_commit` closes the thread's copies issued so far into a group, and
`cp_async_wait(n)` makes the instruction that waits until at most n of the thread's
groups are still in flight (`cp.async.wait_group n`; a barrier then makes every thread's
copies visible to the block). The simulator copies at once, so its commit and wait do
nothing. `ld_shared_u32` reads a word; `ldmatrix(n)` makes the warp-wide read of n 8 x 8
matrices of fp16 (`ldmatrix`: each lane gives a row's address, and each lane receives the
words the mma's fragment layout puts there: 2 instructions for the B fragments of 4 tiles
of X, where 32-bit reads took 8). `float_bits` is `as_float` the other way, for floats kept
in a uint32 array.

Under the CUDA simulator (`NUMBA_ENABLE_CUDASIM=1`) kernels are ordinary Python, so each
primitive also has a numpy twin with the same meaning; kernels call the names defined
here and run unchanged on both.
"""
from __future__ import annotations

import ctypes
import threading

import numpy as np

from labkit.kernels.launch import SIMULATOR

SHARED_ALIGN = None if SIMULATOR else 16  # for shared arrays cp_async16 writes (the simulator takes no alignment)

if SIMULATOR:

    def _u32(v) -> np.uint32:
        return np.uint32(int(v) & 0xFFFFFFFF)

    def load_u32x4(a, i):
        """Four consecutive 32-bit words a.flat[i : i + 4] (i a multiple of 4), as uint32."""
        flat = a.reshape(-1)
        return _u32(flat[i]), _u32(flat[i + 1]), _u32(flat[i + 2]), _u32(flat[i + 3])

    def load_u32x4_once(a, i):
        """load_u32x4 for data read once (weights streamed by a GEMV): `ld.global.lu`, last use."""
        return load_u32x4(a, i)

    def load_u32x2_once(a, i):
        """load_u32x2, `ld.global.lu` (as load_u32x4_once)."""
        return load_u32x2(a, i)

    def load_u32_once(a, i):
        """load_u32, `ld.global.lu` (as load_u32x4_once)."""
        return load_u32(a, i)

    def load_u32x2(a, i):
        """Two consecutive 32-bit words a.flat[i : i + 2] (i even), as uint32."""
        flat = a.reshape(-1)
        return _u32(flat[i]), _u32(flat[i + 1])

    def load_u32(a, i):
        """One 32-bit word a.flat[i], as uint32."""
        return _u32(a.reshape(-1)[i])

    def store_u32x4(a, i, w0, w1, w2, w3):
        """a.flat[i : i + 4] = the four 32-bit words (i a multiple of 4; a of 4-byte elements)."""
        a.reshape(-1).view(np.uint32)[i:i + 4] = [_u32(w0), _u32(w1), _u32(w2), _u32(w3)]

    def store_u32(a, i, w):
        """a.flat[i] = the 32-bit word w (a of 4-byte elements: the bits, whatever their type)."""
        a.reshape(-1).view(np.uint32)[i] = _u32(w)

    def as_float(u):
        """The float32 whose bits are the 32-bit integer u."""
        return np.array(_u32(u)).view(np.float32)[()]

    def halves(u):
        """The two fp16 values packed in word u (low half first), as float32."""
        pair = np.array([_u32(u)]).view(np.float16)
        return np.float32(pair[0]), np.float32(pair[1])

    def pack_halves(lo, hi):
        """One word holding lo (low half) and hi rounded to fp16, to nearest even."""
        return np.array([lo, hi], dtype=np.float32).astype(np.float16).view(np.uint32)[0]

    def exp2_approx(x):
        """2**x (on the GPU the fast approximation, ex2.approx: 2 ulp)."""
        return np.float32(np.exp2(np.float32(x)))

    def rcp_approx(x):
        """1 / x (on the GPU the fast approximation, rcp.approx: 1 ulp)."""
        return np.float32(np.float32(1) / np.float32(x))

    def rint(x):
        """x rounded to the nearest integer, ties to even (as torch.round)."""
        return np.float32(np.rint(x))

    def load_cg(a, i):
        """a.flat[i], read from L2 (bypassing L1)."""
        return a.reshape(-1)[i]

    def load_cg_u32x4(a, i):
        """The bits of a.flat[i : i + 4] (any 4-byte dtype) as uint32, read from L2 (bypassing L1):
        for words other blocks wrote in this launch."""
        words = np.asarray(a).reshape(-1)[i:i + 4].view(np.uint32)
        return words[0], words[1], words[2], words[3]

    def prmt(a, b, selector):
        """Bytes of (b:a) picked by the 4 low nibbles of selector (byte i <- byte sel_i of b:a)."""
        pool = (int(_u32(b)) << 32) | int(_u32(a))
        sel = int(selector)
        return _u32(sum(((pool >> (8 * ((sel >> (4 * i)) & 7))) & 0xFF) << (8 * i) for i in range(4)))

    def lop3_and_or(a, b, c):
        """(a & b) | c."""
        return _u32((int(_u32(a)) & int(_u32(b))) | int(_u32(c)))

    def _h2(u):
        return np.array([_u32(u)]).view(np.float16).astype(np.float64)

    def _pack_h2(v):
        return np.array(v, dtype=np.float64).astype(np.float16).view(np.uint32)[0]

    def hfma2(a, b, c):
        """a * b + c on the two fp16 halves of each word, rounded once (as fma.rn.f16x2)."""
        return _pack_h2(_h2(a) * _h2(b) + _h2(c))  # exact in float64 for fp16 inputs

    def hmul2(a, b):
        """a * b on the two fp16 halves of each word, rounded to fp16."""
        return _pack_h2(_h2(a) * _h2(b))

    def mma_16816(a0, a1, a2, a3, b0, b1, c0, c1, c2, c3):
        """D = A @ B + C for the warp: A 16 x 16 fp16, B 16 x 8 fp16, C/D 16 x 8 fp32.

        Lane (g, t) = (lane // 4, lane % 4) holds A[g, 2t:2t+2] (a0), A[g+8, 2t:2t+2] (a1),
        A[g, 2t+8:2t+10] (a2), A[g+8, 2t+8:2t+10] (a3), B[2t:2t+2, g] (b0), B[2t+8:2t+10, g]
        (b1) and C/D[g, 2t:2t+2] (c0, c1), C/D[g+8, 2t:2t+2] (c2, c3): PTX's m16n8k16 layout.
        """
        lanes = _warp_gather((a0, a1, a2, a3, b0, b1, c0, c1, c2, c3))
        A, B, C = np.zeros((16, 16)), np.zeros((16, 8)), np.zeros((16, 8))
        for lane, (ra0, ra1, ra2, ra3, rb0, rb1, *rc) in enumerate(lanes):
            g, t = divmod(lane, 4)
            A[g, 2 * t:2 * t + 2], A[g + 8, 2 * t:2 * t + 2] = _h2(ra0), _h2(ra1)
            A[g, 2 * t + 8:2 * t + 10], A[g + 8, 2 * t + 8:2 * t + 10] = _h2(ra2), _h2(ra3)
            B[2 * t:2 * t + 2, g], B[2 * t + 8:2 * t + 10, g] = _h2(rb0), _h2(rb1)
            C[g, 2 * t:2 * t + 2], C[g + 8, 2 * t:2 * t + 2] = rc[:2], rc[2:]
        D = (A @ B + C).astype(np.float32)
        g, t = divmod(threading.current_thread().thread_id % 32, 4)
        return D[g, 2 * t], D[g, 2 * t + 1], D[g + 8, 2 * t], D[g + 8, 2 * t + 1]

    def _warp_gather(value):
        """Every lane's `value`, in lane order; every lane of the warp must call it.

        Simulated threads of a warp meet at a barrier, publish their values, and meet again
        before anyone may overwrite them.
        """
        me = threading.current_thread()
        block = me._manager
        warp = me.thread_id // 32
        with _warp_lock:
            if not hasattr(block, "labkit_warps"):
                block.labkit_warps = {}
            if warp not in block.labkit_warps:
                size = min(32, int(np.prod(block._block_dim)) - 32 * warp)
                block.labkit_warps[warp] = (threading.Barrier(size, timeout=120), {})
        barrier, slots = block.labkit_warps[warp]
        slots[me.thread_id % 32] = value
        barrier.wait()
        got = [slots[lane] for lane in sorted(slots)]
        barrier.wait()
        return got

    def shfl_xor(value, offset):
        """The `value` of lane (lane ^ offset) of this warp; every lane of the warp must call it."""
        return _warp_gather(value)[(threading.current_thread().thread_id % 32) ^ offset]

    _warp_lock = threading.Lock()

    def float_bits(f):
        """The 32-bit integer (uint32) whose bits are the float32 f."""
        return np.array(np.float32(f)).view(np.uint32)[()]

    _arrays: dict[int, int] = {}  # start address -> bytes of the arrays `address` was asked about
    # (never cleared or shrunk: a thread may check its copy while another registers a smaller
    # view; a stale entry only lets a bad read through, as the GPU would)

    def address(a, i):
        """The byte address of a.flat[i] (4-byte elements) as a uint64: in the simulator the host
        address of that element, in an array remembered so that cp_async16 can check its reads."""
        flat = np.asarray(a)
        _arrays[flat.ctypes.data] = max(flat.nbytes, _arrays.get(flat.ctypes.data, 0))
        return np.uint64(flat.ctypes.data + 4 * int(i))

    _shared_slots: dict[int, int] = {}  # data address of a shared array -> its slot in _shared_by_slot
    _shared_by_slot: list[np.ndarray] = []  # the last SHARED_SLOTS shared arrays asked about, as words
    SHARED_SLOTS = 1024
    _shared_count = [0]  # arrays registered so far

    def shared_address(a):
        """The shared-window byte address of a shared array's first word. In the simulator: 1 +
        the array's slot (in bits 20 and up) and a byte offset below, so that kernels add byte
        counts to it as they would on the GPU (a GPU's shared window is well under 1 MB)."""
        flat = a.reshape(-1).view(np.uint32)
        with _warp_lock:
            slot = _shared_slots.get(flat.ctypes.data)
            if slot is None:
                slot = _shared_count[0] % SHARED_SLOTS
                _shared_count[0] += 1
                if slot < len(_shared_by_slot):   # recycled: the oldest array's blocks are long done
                    del _shared_slots[_shared_by_slot[slot].ctypes.data]
                    _shared_by_slot[slot] = flat
                else:
                    _shared_by_slot.append(flat)
                _shared_slots[flat.ctypes.data] = slot
            return np.int32((slot + 1) << 20)

    def _shared_words(address, count: int, align: int = 4) -> np.ndarray:
        """`count` words of shared memory from byte address `address` (a view: writable)."""
        address = int(address)
        words = _shared_by_slot[(address >> 20) - 1]
        offset = address & 0xFFFFF
        if offset % align or offset + 4 * count > words.nbytes:
            raise IndexError(f"shared address {offset:#x} (+{4 * count} bytes) is not {align}-byte aligned inside "
                             f"its array of {words.nbytes} bytes")
        return words[offset // 4:offset // 4 + count]

    def cp_async16(dst, src, valid):
        """The 16 bytes at shared byte address `dst` = the 16 bytes at address `src` (from
        `address`, plus byte counts), or zeros where not `valid` (then src is not read)."""
        out = _shared_words(dst, 4, 16)
        if valid:
            src = int(src)
            if src % 16 or not any(start <= src <= start + size - 16 for start, size in list(_arrays.items())):
                raise IndexError(f"cp_async16: 16 bytes at {src:#x} are not 16-byte aligned inside an array")
            out[:] = np.frombuffer(ctypes.string_at(src, 16), np.uint32)
        else:
            out[:] = 0

    def ld_shared_u32(address):
        """The 32-bit word at shared byte address `address`, as uint32."""
        return _u32(_shared_words(address, 1)[0])

    def ldmatrix(n: int):
        """The function reading n (1, 2 or 4) 8 x 8 matrices of 16-bit values from shared memory,
        one register each (`ldmatrix.sync.aligned.m8n8.xn.shared.b16`): lanes 8j .. 8j + 7 give the
        16-byte aligned addresses of rows 0..7 of matrix j, and lane (g, t) = (lane // 4, lane % 4)
        receives word t of row g of each matrix. Every lane of the warp must call it."""
        def load(address):
            rows = _warp_gather(int(address))
            g, t = divmod(threading.current_thread().thread_id % 32, 4)
            words = tuple(_u32(_shared_words(rows[8 * j + g], 4, 16)[t]) for j in range(n))
            return words[0] if n == 1 else words

        return load

    def cp_async_commit():
        """Close this thread's copies issued so far into a group (the simulator copied them already)."""

    def cp_async_wait(n: int):
        """The function that waits until at most `n` of this thread's groups are in flight."""
        return cp_async_commit

    def wait_for_previous_grid():
        """Wait until the previous kernel in the stream is done (a plain launch already did); 0."""
        return np.int32(0)

    def allow_next_grid():
        """Let the next kernel in the stream start launching (nothing to do in the simulator)."""

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

    def _vector_load(n, op="ld.global.nc"):
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
                                   f"{op}{vec}.u32 {{{regs}}}, [${n}];" if n > 1
                                   else f"{op}.u32 $0, [$1];",
                                   ",".join(["=r"] * n) + ",l")
                res = builder.call(asm, [addr])
                if n == 1:
                    return res
                return context.make_tuple(builder, ret, [builder.extract_value(res, k) for k in range(n)])

            return ret(a, i), codegen

        return load

    load_u32x4 = _vector_load(4)
    load_u32x4_once = _vector_load(4, "ld.global.lu")
    load_cg_u32x4 = _vector_load(4, "ld.global.cg")
    load_u32x2 = _vector_load(2)
    load_u32x2_once = _vector_load(2, "ld.global.lu")
    load_u32 = _vector_load(1)
    load_u32_once = _vector_load(1, "ld.global.lu")

    @intrinsic
    def as_float(typingctx, u):
        def codegen(context, builder, sig, args):
            return builder.bitcast(builder.trunc(args[0], ir.IntType(32)) if args[0].type.width > 32
                                   else args[0], ir.FloatType())

        return types.float32(u), codegen

    def _word(builder, v):
        """An integer argument as the 32-bit register PTX wants."""
        if v.type.width == 32:
            return v
        return builder.trunc(v, ir.IntType(32)) if v.type.width > 32 else builder.zext(v, ir.IntType(32))

    def _asm(text: str, outs: str, ins: str, volatile: bool = False):
        """An intrinsic running one PTX snippet: `outs`/`ins` are constraint letters per operand
        (r: 32-bit integer register, f: float32 register); integers come back as uint32.
        `volatile`: kept in order with other volatile statements (barriers, waits)."""
        llvm = {"r": ir.IntType(32), "f": ir.FloatType()}
        nb = {"r": types.uint32, "f": types.float32}
        ret = nb[outs[0]] if len(outs) == 1 else types.Tuple([nb[c] for c in outs])

        def typer(typingctx, *args):
            def codegen(context, builder, sig, llargs):
                vals = [_word(builder, v) if c == "r" else builder.fptrunc(v, ir.FloatType())
                        if v.type != ir.FloatType() else v for v, c in zip(llargs, ins)]
                out_type = llvm[outs[0]] if len(outs) == 1 else ir.LiteralStructType([llvm[c] for c in outs])
                fn = ir.InlineAsm(ir.FunctionType(out_type, [llvm[c] for c in ins]), text,
                                  ",".join(["=" + c for c in outs] + list(ins)), side_effect=volatile)
                res = builder.call(fn, vals)
                if len(outs) == 1:
                    return res
                return context.make_tuple(builder, ret, [builder.extract_value(res, i) for i in range(len(outs))])

            return ret(*args), codegen

        return typer

    def _intrinsic(n_args: int, typer):
        """`typer` as an intrinsic of exactly n_args arguments: Numba lowers `*args` of an
        intrinsic as one tuple argument, so the signature is written out."""
        names = ", ".join(f"a{i}" for i in range(n_args))
        scope = {"typer": typer}
        exec(f"def fn(typingctx, {names}):\n    return typer(typingctx, {names})", scope)
        return intrinsic(scope["fn"])

    def _vector_store(n):
        """An intrinsic store(a, i, w0, ..., w_{n-1}): n 32-bit words to a.flat[i : i + n] in one instruction."""
        def typer(typingctx, a, i, *words):
            def codegen(context, builder, sig, args):
                addr = _address(context, builder, sig.args[0], args[0], args[1])
                regs = ", ".join(f"${k + 1}" for k in range(n))
                text = f"st.global.v{n}.u32 [$0], {{{regs}}};" if n > 1 else "st.global.u32 [$0], $1;"
                fn = ir.InlineAsm(ir.FunctionType(ir.VoidType(), [ir.IntType(64)] + [ir.IntType(32)] * n), text,
                                  "l," + ",".join(["r"] * n) + ",~{memory}", side_effect=True)
                builder.call(fn, [addr] + [_word(builder, w) for w in args[2:]])
                return context.get_dummy_value()

            return types.void(a, i, *words), codegen

        return _intrinsic(n + 2, typer)

    store_u32x4 = _vector_store(4)
    store_u32 = _vector_store(1)

    halves = _intrinsic(1, _asm("{ .reg .f16 lo, hi; mov.b32 {lo, hi}, $2; cvt.f32.f16 $0, lo; cvt.f32.f16 $1, hi; }",
                                "ff", "r"))
    pack_halves = _intrinsic(2, _asm("cvt.rn.f16x2.f32 $0, $2, $1;", "r", "ff"))   # {hi, lo}: hi first
    exp2_approx = _intrinsic(1, _asm("ex2.approx.ftz.f32 $0, $1;", "f", "f"))
    rcp_approx = _intrinsic(1, _asm("rcp.approx.ftz.f32 $0, $1;", "f", "f"))
    prmt = _intrinsic(3, _asm("prmt.b32 $0, $1, $2, $3;", "r", "rrr"))
    lop3_and_or = _intrinsic(3, _asm("lop3.b32 $0, $1, $2, $3, 0xEA;", "r", "rrr"))  # 0xEA: (a & b) | c
    hfma2 = _intrinsic(3, _asm("fma.rn.f16x2 $0, $1, $2, $3;", "r", "rrr"))
    hmul2 = _intrinsic(2, _asm("mul.rn.f16x2 $0, $1, $2;", "r", "rr"))
    mma_16816 = _intrinsic(10, _asm(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {$0, $1, $2, $3}, {$4, $5, $6, $7}, "
        "{$8, $9}, {$10, $11, $12, $13};", "ffff", "rrrrrrffff"))

    def _statement(text: str, returns_zero: bool = False):
        """An intrinsic running one PTX statement, kept in place (volatile, and a memory clobber
        so that no ordinary load or store moves across it); with `returns_zero`, it also yields
        an int32 0 that later loads can depend on."""

        @intrinsic
        def emit(typingctx):
            def codegen(context, builder, sig, args):
                i32 = ir.IntType(32)
                if returns_zero:
                    fn = ir.InlineAsm(ir.FunctionType(i32, []), text + " mov.u32 $0, 0;", "=r,~{memory}",
                                      side_effect=True)
                    return builder.call(fn, [])
                builder.call(ir.InlineAsm(ir.FunctionType(ir.VoidType(), []), text, "~{memory}", side_effect=True), [])
                return context.get_dummy_value()

            return (types.int32 if returns_zero else types.void)(), codegen

        return emit

    wait_for_previous_grid = _statement("griddepcontrol.wait;", returns_zero=True)
    allow_next_grid = _statement("griddepcontrol.launch_dependents;")
    cp_async_commit = _statement("cp.async.commit_group;")

    def cp_async_wait(n: int):
        return _statement(f"cp.async.wait_group {int(n)};")

    @intrinsic
    def float_bits(typingctx, f):
        def codegen(context, builder, sig, args):
            return builder.bitcast(args[0], ir.IntType(32))

        return types.uint32(types.float32), codegen

    @intrinsic
    def shared_address(typingctx, a):
        def codegen(context, builder, sig, args):
            base = builder.ptrtoint(context.make_array(sig.args[0])(context, builder, args[0]).data, ir.IntType(64))
            fn = ir.InlineAsm(ir.FunctionType(ir.IntType(32), [ir.IntType(64)]),
                              "{ .reg .u64 a; cvta.to.shared.u64 a, $1; cvt.u32.u64 $0, a; }", "=r,l")
            return builder.call(fn, [base])

        return types.int32(a), codegen

    # Reads of shared memory are volatile: kept in order with the barriers and cp.async waits around them.
    ld_shared_u32 = _intrinsic(1, _asm("ld.shared.u32 $0, [$1];", "r", "r", volatile=True))

    def ldmatrix(n: int):
        regs = ", ".join(f"${k}" for k in range(n))
        return _intrinsic(1, _asm(f"ldmatrix.sync.aligned.m8n8.x{n}.shared.b16 {{{regs}}}, [${n}];", "r" * n, "r",
                                  volatile=True))

    @intrinsic
    def address(typingctx, a, i):
        def codegen(context, builder, sig, args):
            return _address(context, builder, sig.args[0], args[0], args[1])

        return types.uint64(a, i), codegen

    @intrinsic
    def cp_async16(typingctx, dst, src, valid):
        def codegen(context, builder, sig, args):
            size = builder.shl(_word(builder, args[2]), ir.Constant(ir.IntType(32), 4))  # 16, or 0: zero-fill
            fn = ir.InlineAsm(ir.FunctionType(ir.VoidType(), [ir.IntType(32), ir.IntType(64), ir.IntType(32)]),
                              "cp.async.cg.shared.global [$0], [$1], 16, $2;", "r,l,r,~{memory}", side_effect=True)
            builder.call(fn, [_word(builder, args[0]), args[1], size])
            return context.get_dummy_value()

        return types.void(dst, src, valid), codegen

    @cuda.jit(device=True, inline="always")
    def rint(x):
        return cuda.libdevice.rintf(x)

    @cuda.jit(device=True, inline="always")
    def load_cg(a, i):
        return cuda.ldcg(a, i)

    @cuda.jit(device=True, inline="always")
    def shfl_xor(value, offset):
        return cuda.shfl_xor_sync(0xFFFFFFFF, value, offset)
