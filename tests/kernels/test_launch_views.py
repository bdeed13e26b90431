"""On a GPU: Numba views of tensors are cached by (address, device, dtype, shape, strides),
and the cache keeps no tensor alive."""
import gc
import weakref

import pytest
import torch


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_views_are_cached_by_value_and_own_nothing():
    from labkit.kernels import launch as L

    t = torch.arange(64, device="cuda", dtype=torch.float16)
    view = L.as_array(t)
    assert L.as_array(t) is view                                   # a hit: same address, shape, dtype
    assert L.as_array(t.view(torch.int32)) is not view             # same address, other dtype
    assert L.as_array(t[:32]) is not view                          # same address, other shape
    assert view.copy_to_host().tolist() == t.cpu().float().tolist()
    alive = weakref.ref(t)
    del t
    gc.collect()
    assert alive() is None                                         # the cached view did not keep it


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fast_launch_passes_the_same_arguments_as_numba():
    import numpy as np
    from numba import cuda

    from labkit.kernels import launch as L

    @cuda.jit
    def affine(x, out, a, b, c):   # out[i, j] = x[i, j] * a + b + c, over a 2-D array
        i, j = cuda.grid(2)
        if i < x.shape[0] and j < x.shape[1]:
            out[i, j] = x[i, j] * a + b + c

    def run(x):
        out = torch.full_like(x, float("nan"))
        L.launch(affine, (2, 3), (16, 16), x, out, 0.5, 3, np.uint32(7))
        torch.cuda.synchronize()
        return out

    x = torch.randn(20, 40, device="cuda", dtype=torch.float32)
    first = run(x)                                                  # through Numba: types and compiles
    key = next(k for k in L._fast if k and k[0] is affine)
    assert L._fast[key]                                             # ... and records the fast entry
    y = torch.randn(30, 33, device="cuda", dtype=torch.float32)    # new shape and address: the fast path
    for got, inp in ((first, x), (run(y), y), (run(x), x)):
        assert torch.equal(got, inp * 0.5 + 10)
    strided = torch.randn(40, 20, device="cuda").t()               # not contiguous: always through Numba
    assert torch.equal(run(strided), strided * 0.5 + 10)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cpu_tensor_is_one_clear_error_after_fast_launches():
    """Once a kernel launches fast with CUDA tensors, a CPU tensor of the same kind must not reach
    it as a raw address (an illegal access that would end the process's CUDA context)."""
    from labkit.kernels import w4a16_gemv
    from labkit.kernels.packing import random_int4_layer

    layer = random_int4_layer(64, 128, 32, "cuda")
    x = torch.randn(128, device="cuda").half()
    for _ in range(2):   # the second launch takes the fast path
        w4a16_gemv.w4a16_gemv(x, *layer, 32)
    with pytest.raises(ValueError, match="must be CUDA tensors"):
        w4a16_gemv.w4a16_gemv(x.cpu(), *layer, 32)
    assert torch.isfinite(w4a16_gemv.w4a16_gemv(x, *layer, 32)).all()   # the context is still usable
