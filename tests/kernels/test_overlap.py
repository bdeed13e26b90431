"""Overlapped (programmatic dependent) launches compute the same bits as ordinary ones.

On a GPU: two GEMVs where the second reads the first's output, after a fill that poisons
that output, captured in one CUDA graph with overlapped launches and replayed on new inputs,
give exactly the eager result of ordinary launches. A GEMV that read its input before the
previous kernel finished would see NaN or last replay's values. Under the simulator the
overlapped launch is the ordinary one, which the switch must report."""
import pytest
import torch

from labkit.kernels import launch
from labkit.kernels.packing import random_int4_layer
from labkit.kernels.w4a16_gemv import w4a16_gemv


def test_switch_reports_what_runs():
    previous = launch.set_overlap(False)
    try:
        assert not launch.overlap_enabled()
        launch.set_overlap(True)
        if launch.SIMULATOR or not torch.cuda.is_available():
            assert not launch.overlap_enabled()
        else:
            assert launch.overlap_enabled() == (torch.cuda.get_device_capability()[0] >= 9)
    finally:
        launch.set_overlap(previous)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_overlapped_graph_replay_equals_ordinary_eager_launches(seed):
    gen = torch.Generator().manual_seed(seed)
    first = random_int4_layer(11008, 4096, 128, "cuda", gen)    # 4096 -> 11008
    second = random_int4_layer(4096, 11008, 128, "cuda", gen)   # 11008 -> 4096
    x = torch.empty(4096, dtype=torch.float16, device="cuda")
    h = torch.empty(11008, dtype=torch.float16, device="cuda")
    y = torch.empty(4096, dtype=torch.float16, device="cuda")

    def chain():
        h.fill_(float("nan"))
        w4a16_gemv(x, *first, 128, out=h)
        w4a16_gemv(h, *second, 128, out=y)

    previous = launch.set_overlap(True)
    try:
        x.copy_(torch.randn(4096, generator=gen).half())
        for _ in range(2):   # compiled, workspaces allocated, fast launch path taken
            chain()
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            chain()
        got = []
        for _ in range(3):
            x.copy_(torch.randn(4096, generator=gen).half())
            graph.replay()
            got.append((x.clone(), h.clone(), y.clone()))
        torch.cuda.synchronize()
        launch.set_overlap(False)
        for xi, hi, yi in got:
            x.copy_(xi)
            chain()
            torch.cuda.synchronize()
            assert not torch.isnan(yi).any()
            assert torch.equal(hi, h) and torch.equal(yi, y)
    finally:
        launch.set_overlap(previous)
