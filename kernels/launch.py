"""How a labkit kernel is launched: on torch's stream, on torch's memory, capturable.

Three rules make Numba kernels good citizens inside a PyTorch program:

1. Launch on the stream torch is using (`cuda.external_stream` around
   `torch.cuda.current_stream()`), so kernels order correctly with torch ops and can be
   recorded by `torch.cuda.graph(...)` capture, which watches that stream.
2. Pass torch tensors as views (`__cuda_array_interface__`), never copies, and without the
   stream synchronization Numba does by default on imported arrays: a synchronization is
   illegal while a graph is being captured.
3. Allocate nothing during a launch that must be capturable: outputs and workspaces are
   created by the caller or cached ahead (`workspace`).

A Numba launch costs tens of microseconds of host time; a CUDA graph replays a whole
sequence of launches for a few microseconds, which is why rule 1 matters on a GPU.

A kernel written to overlap with the one before it (`ptx.wait_for_previous_grid` before it
reads anything that kernel wrote) may be launched with `overlap=True`: programmatic
dependent launch (Hopper and later), through `cuLaunchKernelEx` with the programmatic-
stream-serialization attribute, which CUDA graph capture records as a programmatic edge.
The kernel is then resident and waiting when its predecessor lets it start. It pays only
where the predecessor takes part (issues `allow_next_grid`, as labkit's GEMVs and decode
attention do); behind Inductor's kernels the programmatic edges made the step slower. With
the fused decode layers every kernel of a batch-1 layer takes part, and overlap gained
3-4% on the fp16 step and nothing on the int4 one, and lost up to 3% at batch 4-16 (all
measured in docs/benchmarks.md), so it stays off unless asked for (`LABKIT_OVERLAP=1` or
`set_overlap(True)`). The ordinary launch is the fallback (older GPUs, the simulator) and
computes the same bits: the wait is then a no-op.

Under the CUDA simulator (`NUMBA_ENABLE_CUDASIM=1`) tensors live on the CPU and are handed
to the kernel as numpy views of the same memory, so the same launch code runs in CI. Where
there is no GPU and nobody chose, importing `labkit.kernels` selects the simulator.
"""
from __future__ import annotations

import ctypes
import functools
import os
from typing import Any, Callable

import numpy as np
import torch
from numba import config, cuda

SIMULATOR = bool(config.ENABLE_CUDASIM)

if SIMULATOR:
    import sys
    import threading

    from numba.core import types
    from numba.cuda.simulator.kernelapi import FakeCUDAShared
    from numba.np import numpy_support

    _shared_lock = threading.Lock()
    _dynamic_shared_array = FakeCUDAShared.array

    def _shared_array(self, shape, dtype, alignment=None):
        """The simulator's `cuda.shared.array`, made safe for the threads of a block.

        The simulator keys a block's shared arrays by the calling line and creates one on
        first use without a lock: two threads arriving together could each create their own,
        and a thread writing to the array that lost left garbage for the others (seen as rare
        failures of the attention tests). Same keying, under a lock.
        """
        if shape == 0 or alignment is not None:  # dynamic shared memory, or the simulator's error
            return _dynamic_shared_array(self, shape, dtype, alignment)
        caller = sys._getframe(1)
        key = (caller.f_code.co_filename, caller.f_lineno)
        with _shared_lock:
            if key not in self._allocations:
                np_dtype = numpy_support.as_dtype(dtype) if isinstance(dtype, types.Type) else dtype
                self._allocations[key] = np.empty(shape, np_dtype)
            return self._allocations[key]

    FakeCUDAShared.array = _shared_array
else:
    from numba.cuda import dispatcher as _numba_dispatcher  # its own launch API (cuda.core), for _fast_launch
    from numba.cuda import types
    from numba.cuda.typing.typeof import Purpose, typeof


def kernel(threads: int, min_blocks: int = 1, fastmath: bool = False) -> Any:
    """`cuda.jit` for a kernel launched with `threads` threads per block, `min_blocks` of
    which should fit on one SM (0: no such promise).

    These launch bounds decide how ptxas trades registers for latency hiding. Without
    them it aims at a high occupancy, keeps registers few and sinks each load next to its
    first use, so a thread waits for its loads one at a time (seen in the W4A16 GEMV's
    SASS, at a fraction of the bandwidth). Told that one block of 128 threads per SM is
    enough, it spends more registers and issues all of them together. (The simulator takes no launch bounds.)
    """
    if SIMULATOR:
        return cuda.jit(fastmath=fastmath)
    return cuda.jit(launch_bounds=(threads, min_blocks) if min_blocks else threads, fastmath=fastmath)


def inlined(fn: Any) -> Any:
    """A device function that NVVM inlines into its callers (`forceinline`).

    Numba's own `inline="always"` inlines at the level of its IR and types the body again
    at every call site; for the unrolled ring of w4a16_tc that took minutes to compile,
    against seconds when LLVM does the inlining. (The simulator takes no such option.)
    """
    return cuda.jit(device=True)(fn) if SIMULATOR else cuda.jit(device=True, forceinline=True)(fn)


def unrolled(make_step: Callable[[int], Any], count: int) -> Any:
    """One inline device function calling make_step(0), ..., make_step(count - 1) in turn.

    Numba has no `#pragma unroll`, and LLVM keeps a loop whose body is large. A register
    ring (stage i of an array of loads in flight) must be indexed by constants, or it is
    moved to local memory: so each step is its own function with `i` baked in, and they
    are chained. The steps take the same (up to 10) arguments.
    """
    run = make_step(0)
    for i in range(1, count):
        run = _then(run, make_step(i))
    return run


def _then(first: Any, second: Any) -> Any:
    @inlined
    def both(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9):
        first(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9)
        second(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9)

    return both


def device() -> torch.device:
    """Where kernel inputs must live: the GPU, or the CPU under the simulator."""
    return torch.device("cpu") if SIMULATOR else torch.device("cuda")


_views: dict[tuple, Any] = {}
VIEW_CACHE_SIZE = 4096


def as_array(t: torch.Tensor) -> Any:
    """A zero-copy Numba view of a tensor (a numpy view under the simulator).

    Views serve the launches that go through Numba (a kernel's first launch with a kind of
    arguments, and non-contiguous tensors, see `launch`). Building a Numba device array from
    `__cuda_array_interface__` costs tens of microseconds of host time (docs/benchmarks.md); a
    view is only (address, shape, strides, dtype), so views are cached by that key. They are
    made without an owner, so the cache keeps no tensor alive (the caller's tensors live
    through the launch).
    """
    if SIMULATOR:
        return t.detach().numpy()
    require(t.is_cuda, f"kernel inputs must be CUDA tensors, got one on {t.device}")
    key = (t.data_ptr(), t.device.index, t.dtype, tuple(t.shape), tuple(t.stride()))
    view = _views.get(key)
    if view is None:
        if len(_views) >= VIEW_CACHE_SIZE:
            _views.clear()
        view = _views[key] = cuda.from_cuda_array_interface(t.detach().__cuda_array_interface__, owner=None,
                                                            sync=False)
    return view


_streams: dict[int, Any] = {}


def stream() -> Any:
    """The Numba stream wrapping torch's current CUDA stream (0 under the simulator)."""
    if SIMULATOR:
        return 0
    handle = torch.cuda.current_stream().cuda_stream
    if handle not in _streams:
        _streams[handle] = cuda.external_stream(handle)
    return _streams[handle]


def launch(kernel: Any, grid: tuple[int, ...], block: tuple[int, ...], *args: Any, overlap: bool = False,
           shared_bytes: int = 0) -> None:
    """Launch `kernel[grid, block]` on torch's current stream; tensors become views.

    The first launch of a kernel with a given kind of arguments goes through Numba (which
    types the arguments and compiles); later ones take `_fast_launch`, which skips Numba's
    per-launch argument handling (a large share of an eager prefill step's host time).
    `overlap=True`: a programmatic dependent launch where `overlap_enabled()` (see above).
    `shared_bytes`: the block's dynamic shared memory (`cuda.shared.array(0, ...)`); above the
    48 KB any kernel may have, the compiled kernel is first allowed that much (`_allow_shared`).
    """
    key = None if SIMULATOR else (kernel, torch.cuda.current_device(), tuple(_arg_kind(a) for a in args))
    fast = _fast.get(key)
    if fast:
        _fast_launch(fast, grid, block, args, overlap and overlap_enabled(), shared_bytes)
        return
    converted = [as_array(a) if isinstance(a, torch.Tensor) else a for a in args]
    if shared_bytes > DEFAULT_SHARED and not SIMULATOR:   # (allowed before the first launch: compile it first)
        argtypes = _argtypes(converted)
        _allow_shared(_function(kernel.overloads.get(argtypes) or kernel.compile(argtypes)), shared_bytes)
    kernel[grid, block, stream(), shared_bytes](*converted)
    if fast is None and key is not None:
        _fast[key] = None not in key[2] and _fast_entry(kernel, converted)   # False: always through Numba


DEFAULT_SHARED = 48 * 1024  # the shared memory a block may have without asking (static and dynamic)
_allowed: dict[tuple, int] = {}  # (CUDA function, device) -> the dynamic shared memory it was allowed


def _argtypes(converted: list) -> tuple:
    """The Numba types of a launch's (converted) arguments: they select the compiled overload."""
    return tuple(typeof(v, Purpose.argument) for v in converted)


def _function(compiled: Any) -> Any:
    """The CUDA function of a compiled overload."""
    return compiled._codelibrary.get_cufunc().kernel


def _allow_shared(function: Any, nbytes: int) -> None:
    """Let `function` launch with `nbytes` of dynamic shared memory (CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_
    SHARED_SIZE_BYTES: without it a launch above 48 KB fails), once per function, device and size."""
    key = (function, torch.cuda.current_device())
    if _allowed.get(key, 0) >= nbytes:
        return
    from cuda.bindings import driver

    attribute = driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
    handle = _handle(function)
    if isinstance(handle, driver.CUkernel):   # (a context-independent kernel: set for the current device)
        err, = driver.cuKernelSetAttribute(attribute, nbytes, handle, driver.CUdevice(torch.cuda.current_device()))
    else:
        err, = driver.cuFuncSetAttribute(handle, attribute, nbytes)
    if err != driver.CUresult.CUDA_SUCCESS:
        raise RuntimeError(f"a kernel could not be allowed {nbytes} bytes of shared memory: {err}")
    _allowed[key] = nbytes


def _handle(function: Any) -> Any:
    """The driver's handle (CUkernel or CUfunction) behind Numba's compiled function."""
    return getattr(function, "handle", None) or function._handle


def shared_memory() -> tuple[int, int]:
    """(bytes of shared memory per SM, the most one block may ask for) on the current GPU; an
    H100's or H200's (228 KB, 227 KB) under the simulator."""
    if SIMULATOR or not torch.cuda.is_available():
        return 228 * 1024, 227 * 1024
    return _device_shared_memory(torch.cuda.current_device())


@functools.lru_cache(maxsize=None)
def _device_shared_memory(index: int) -> tuple[int, int]:
    """shared_memory() of GPU `index`, asked once (plans ask at every launch)."""
    gpu = cuda.gpus[index]
    return gpu.MAX_SHARED_MEMORY_PER_MULTIPROCESSOR, gpu.MAX_SHARED_MEMORY_PER_BLOCK_OPTIN


_fast: dict[tuple, Any] = {}  # (kernel, device, argument kinds) -> _fast_entry, or False


def _arg_kind(a: Any) -> Any:
    """What decides the compiled kernel an argument selects (None: always the ordinary path)."""
    if isinstance(a, torch.Tensor):   # (a tensor off the GPU takes the ordinary path, which rejects it)
        return (a.dtype, a.dim()) if a.is_contiguous() and a.is_cuda else None
    if isinstance(a, (bool, np.bool_)):
        return None
    if isinstance(a, (int, float)):
        return type(a)
    if isinstance(a, np.generic):
        return a.dtype
    return None


def _fast_entry(kernel: Any, converted: list) -> Any:
    """(CUDA function, one converter per argument) for the overload `converted` selected, or False."""
    argtypes = _argtypes(converted)
    compiled = kernel.overloads.get(argtypes)
    if compiled is None or kernel.extensions:
        return False
    converters = []
    for ty in argtypes:
        if isinstance(ty, types.Array):
            converters.append(None)
        elif isinstance(ty, types.Integer):
            converters.append(getattr(ctypes, f"c_{ty}"))
        elif ty == types.float32:
            converters.append(ctypes.c_float)
        elif ty == types.float64:
            converters.append(ctypes.c_double)
        else:
            return False
    return _function(compiled), converters


def _fast_launch(fast: Any, grid: Any, block: Any, args: tuple, overlap: bool = False, shared_bytes: int = 0) -> None:
    """What Numba's launch passes for each argument, built from the tensors directly: an array
    is (meminfo, parent, size, itemsize, data pointer, *shape, *C strides in bytes)."""
    function, converters = fast
    params: list = []
    for a, convert in zip(args, converters):
        if convert is None:
            itemsize, shape = a.element_size(), tuple(a.shape)
            strides, step = [], itemsize
            for n in reversed(shape):
                strides.append(step)
                step *= n
            params += [0, 0, a.numel(), itemsize, a.data_ptr(), *shape, *reversed(strides)]
        else:
            params.append(convert(a))
    if shared_bytes > DEFAULT_SHARED:
        _allow_shared(function, shared_bytes)
    if overlap:
        _overlapped_launch(function, _dims(grid), _dims(block), params, shared_bytes)
        return
    config = _numba_dispatcher.LaunchConfig(grid=_dims(grid), block=_dims(block), shmem_size=shared_bytes)
    _numba_dispatcher.launch(stream(), config, function, *params)


# ----------------------------------------------------------------- programmatic dependent launch

_overlap = {"wanted": os.environ.get("LABKIT_OVERLAP", "0") == "1", "supported": None}


def overlap_enabled() -> bool:
    """Whether `launch(..., overlap=True)` overlaps: wanted (`set_overlap`, `LABKIT_OVERLAP`) and
    supported (a GPU of compute capability 9.0 or later, not the simulator)."""
    if not _overlap["wanted"] or SIMULATOR:
        return False
    if _overlap["supported"] is None:
        _overlap["supported"] = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 9
    return _overlap["supported"]


def set_overlap(wanted: bool) -> bool:
    """Turn overlapped launches on or off (for A/B timing and tests); returns the previous wish.
    Affects launches made from now on: a captured CUDA graph keeps the launches it recorded."""
    previous, _overlap["wanted"] = _overlap["wanted"], wanted
    return previous


def _overlapped_launch(function: Any, grid: tuple, block: tuple, params: list, shared_bytes: int = 0) -> None:
    """`cuLaunchKernelEx` with CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION on torch's
    stream. Every parameter is 8 bytes (pointers, intp) except those `_fast_entry` converted."""
    from cuda.bindings import driver

    values = [p if isinstance(p, ctypes._SimpleCData) else ctypes.c_int64(p) for p in params]
    pointers = (ctypes.c_void_p * len(values))(*[ctypes.addressof(v) for v in values])
    attribute = driver.CUlaunchAttribute()
    attribute.id = driver.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
    attribute.value.programmaticStreamSerializationAllowed = 1
    config = driver.CUlaunchConfig()
    config.gridDimX, config.gridDimY, config.gridDimZ = grid
    config.blockDimX, config.blockDimY, config.blockDimZ = block
    config.sharedMemBytes = shared_bytes
    config.hStream = driver.CUstream(torch.cuda.current_stream().cuda_stream)
    config.attrs = [attribute]
    config.numAttrs = 1
    err, = driver.cuLaunchKernelEx(config, _handle(function), ctypes.addressof(pointers), 0)
    if err != driver.CUresult.CUDA_SUCCESS:
        raise RuntimeError(f"cuLaunchKernelEx failed: {err}")


def _dims(d: Any) -> tuple[int, int, int]:
    d = (d,) if isinstance(d, int) else tuple(d)
    return d + (1,) * (3 - len(d))


_workspaces: dict[tuple, torch.Tensor] = {}


def workspace(name: str, shape: tuple[int, ...], dtype: torch.dtype, dev: torch.device) -> torch.Tensor:
    """A zero-initialized buffer kept across calls, keyed by name, shape, dtype and device.

    Split-K kernels keep their partial sums and arrival counters here. Allocating them
    once keeps launches capturable; the counters reset themselves at the end of every
    launch, so the buffer is reused by one stream at a time (as the engine does).
    """
    key = (name, shape, dtype, str(dev))
    if key not in _workspaces:
        _workspaces[key] = torch.zeros(shape, dtype=dtype, device=dev)
    return _workspaces[key]


def require(cond: bool, message: str) -> None:
    """Raise ValueError(message) unless cond: launchers check shapes before the GPU does."""
    if not cond:
        raise ValueError(message)


def sm_count() -> int:
    """Streaming multiprocessors of the current GPU (a nominal 132 under the simulator)."""
    if SIMULATOR or not torch.cuda.is_available():
        return 132
    return torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
