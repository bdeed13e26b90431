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
