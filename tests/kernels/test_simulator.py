"""The CUDA simulator as the kernel tests use it: every thread of a block must see the same
shared array (the simulator's own `cuda.shared.array` could hand two racing threads two)."""
import sys
import threading

import pytest

from labkit.kernels import launch

pytestmark = pytest.mark.skipif(not launch.SIMULATOR, reason="tests the CUDA simulator")


def test_threads_of_a_block_share_one_shared_array():
    from numba import float32
    from numba.cuda.simulator.kernelapi import FakeCUDAShared

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: widens any race
    try:
        for _ in range(200):  # unpatched, about 1 trial in 70 got two arrays
            shared = FakeCUDAShared(0)
            start = threading.Barrier(16)
            got = []

            def thread():
                start.wait()
                got.append(shared.array(64, float32))

            threads = [threading.Thread(target=thread) for _ in range(16)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert len({id(a) for a in got}) == 1
    finally:
        sys.setswitchinterval(interval)
