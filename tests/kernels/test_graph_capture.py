"""On a GPU: a sequence of kernel launches (GEMV, GEMM, KV write, paged attention) is
captured in one torch CUDA graph and its replay on new inputs equals eager execution."""
import pytest
import torch


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_launch_sequence_replays_in_a_cuda_graph():
    from labkit.kernels.graph_capture import graph_capture_check

    assert graph_capture_check()["graph_replay_matches_eager"]
