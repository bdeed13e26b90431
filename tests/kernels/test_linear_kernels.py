"""Quantized linear kernels on small odd shapes: relative error against float64 torch on
fresh random inputs, every output element written (outputs start as NaN). Tolerances come
from measure.dot_tolerance (fp32 accumulation, fp16 output), not from tuning."""
import pytest
import torch

from labkit.kernels import (dequant, dispatch, launch, measure, w4a16_gemm, w4a16_gemv, w4a16_tc, w4a16_tc_async,
                            w8a16_gemv)
from labkit.kernels.packing import dequantize_int4, random_int4_layer

# Each check raises past its own dot_tolerance; the tests also bound what it returns: at these
# small K the error is the fp16 rounding of the outputs (~u16), far below a wrong kernel's O(1).
FP16_LEVEL = 8 * measure.U16


@pytest.mark.parametrize("n, k, g, tile", [
    (96, 192, 64, (2, 2, 2, 2, 1, 4)),     # N not a multiple of the 64-column tile; K over 6 blocks
    (64, 80, 16, (1, 2, 2, 3, 1, 4)),      # K = 5 runs of 16 rows in blocks of 2: uneven; all rounds in flight
    (160, 256, 128, (4, 3, 4, 3, 1, 4)),   # group 128, 8 runs of 32 rows in blocks of 3; the ring turns
    (64, 96, 32, (2, 4, 1, 2, 1, 4)),      # one round per run: 12 runs, 3 groups
    (40, 192, 64, (2, 3, 2, 3, 1, 1)),     # 4-byte loads (8 columns a thread): N = 5 words, a partial tile
    (80, 128, 32, (3, 2, 4, 3, 1, 2)),     # 8-byte loads: 5 chunks of 16 columns in tiles of 3
    (32, 176, 16, (1, 1, 2, 3, 1, 4)),     # K over 11 blocks: the last block reads 8 partial sums, then 3
])
def test_w4a16_gemv(n, k, g, tile, seed):
    assert w4a16_gemv.check(n, k, g, tile, seed=seed) <= FP16_LEVEL


def test_w4a16_gemv_default_plan(seed):
    assert w4a16_gemv.check(64, 128, 32, tile=None, seed=seed) <= FP16_LEVEL


@pytest.mark.parametrize("m, n, k, g, tile", [
    (2, 40, 96, 32, (4, 2, 2)),   # N = 40: 5 words over tiles of 4
    (5, 24, 128, 64, (2, 2, 3)),
    (8, 64, 64, 32, (8, 1, 1)),
])
def test_w4a16_gemm(m, n, k, g, tile, seed):
    assert w4a16_gemm.check(m, n, k, g, tile, seed=seed) <= FP16_LEVEL


@pytest.mark.parametrize("m, n, k, g, tile", [
    (1, 64, 64, 32, (1, 1, 1, 3, 1)),      # one warp, one block, two slabs
    (3, 136, 160, 32, (2, 1, 2, 3, 1)),    # N = 136: a partial block of columns; groups of 2 slabs
    (8, 48, 512, 128, (2, 1, 1, 8, 1)),    # 8 rows (all of the mma's B columns); 7 slabs in flight
    (2, 200, 384, 64, (2, 1, 3, 5, 1)),    # K over 3 blocks of 8 slabs, the ring turning mid-group
    pytest.param(13, 64, 160, 32, (1, 2, 2, 3, 1), marks=pytest.mark.slow),  # 2 B tiles, the second
    # partial; K over 2 blocks of 5 slabs, split 3 + 2 between the block's 2 warps
    pytest.param(32, 72, 96, 32, (1, 4, 1, 2, 1), marks=pytest.mark.slow),   # 4 B tiles; 6 slabs over
    # 4 warps along K (2, 2, 2 and none); N = 72: a partial tile of columns
])
def test_w4a16_tc(m, n, k, g, tile, seed):
    assert w4a16_tc.check(m, n, k, g, tile, seed=seed) <= FP16_LEVEL


@pytest.mark.parametrize("kernel", [w4a16_tc.w4a16_tc, w4a16_tc_async.w4a16_tc_async])
def test_tensor_core_kernels_reject_what_they_cannot_run(kernel):
    """The checks both tensor-core kernels share (w4a16_tc.require_inputs)."""
    qweight, qzeros, scales = random_int4_layer(64, 96, 96, launch.device())
    with pytest.raises(ValueError, match="power-of-two group_size"):
        kernel(torch.zeros(1, 96).half(), qweight, qzeros, scales, 96)
    qweight, qzeros, scales = random_int4_layer(64, 96, 32, launch.device())
    with pytest.raises(ValueError, match="1..32 rows"):
        kernel(torch.zeros(33, 96).half(), qweight, qzeros, scales, 32)


def test_w4a16_tc_plan():
    """The warps split K inside the block unless the columns alone fill a wave of blocks;
    more B tiles, fewer stages and blocks per SM."""
    assert w4a16_tc.plan(8, 4096, 4096, 128)[:2] == (1, 4)
    assert w4a16_tc.plan(8, 12288, 4096, 128)[:2] == (1, 4)
    assert w4a16_tc.plan(8, 22016, 4096, 128)[:2] == (1, 4)    # 344 blocks: under a wave of 4 x 132
    assert w4a16_tc.plan(32, 22016, 4096, 128)[:2] == (4, 1)   # over a wave of 2 x 132
    for m in (1, 8, 16, 32):
        warps_n, warps_k, splits, depth, _ = w4a16_tc.plan(m, 4096, 11008, 128)
        assert 11008 // 16 // (splits * warps_k) >= 2 and depth - 1 <= 128 // 16
    assert w4a16_tc.plan(32, 4096, 4096, 128)[3] < w4a16_tc.plan(8, 4096, 4096, 128)[3]


@pytest.mark.parametrize("m, n, k, g, tile", [
    (1, 64, 64, 32, (1, 1, 1, 2, 1, 1)),      # one warp, one block, 4 stages of one slab through 2 slots
    (3, 160, 160, 32, (2, 2, 2, 3, 1, 1)),    # N = 160: a partial block of columns; 5 stages of 2 slabs over
    # 2 blocks along K (3 + 2), a group every stage
    (2, 96, 224, 32, (1, 4, 2, 3, 1, 1)),     # 14 slabs in stages of 4: K not a multiple of the stage (the
    # last one half empty); a stage spans 2 groups
    (8, 64, 512, 128, (1, 2, 1, 8, 1, 1)),    # 8 rows (all of the mma's B columns); g = 128: a group spans 4
    # stages; 7 stages in flight, the ring turning twice
    (5, 64, 384, 64, (4, 1, 3, 5, 1, 1)),     # warps side by side along N: 3 of the 4 past N = 64; g = 64
    (3, 96, 352, 32, (1, 2, 2, 3, 1, 2)),     # 2 slabs per warp and stage: 22 slabs in stages of 4 (the last
    # one half empty) over 2 blocks along K (3 + 3 stages); a stage spans 2 groups, a warp's slabs 1
    (6, 64, 448, 64, (2, 1, 1, 2, 1, 4)),     # 4 slabs per warp: 28 slabs in stages of 4 through 2 slots
    (5, 64, 320, 32, (1, 1, 9, 2, 1, 1)),     # 9 blocks along K (the tail adds them up 8 at a time, not 4
    # outputs at once); 10 outputs per thread of the last block
    (5, 64, 320, 32, (1, 1, 5, 2, 1, 1)),     # 5 blocks along K: 10 outputs per thread, 4 read at once
    pytest.param(13, 96, 224, 32, (1, 4, 2, 3, 1, 1), marks=pytest.mark.slow),  # 2 B tiles, the second partial
    pytest.param(17, 64, 128, 64, (1, 2, 1, 2, 1, 1), marks=pytest.mark.slow),  # 3 B tiles, 2 slots
    pytest.param(32, 96, 160, 32, (2, 2, 1, 4, 1, 1), marks=pytest.mark.slow),  # 4 B tiles
    pytest.param(27, 64, 320, 32, (1, 2, 2, 2, 1, 2), marks=pytest.mark.slow),  # 4 B tiles, 2 slabs per warp
    pytest.param(19, 128, 768, 64, (2, 4, 1, 3, 1, 4), marks=pytest.mark.slow),  # the plan's layout at 17-32
    # rows: 2 x 4 warps of 4 slabs, 3 stages of 256 rows through 3 slots; 3 B tiles
])
def test_w4a16_tc_async(m, n, k, g, tile, seed):
    assert w4a16_tc_async.check(m, n, k, g, tile, seed=seed) <= FP16_LEVEL


def test_w4a16_tc_async_rejects_tiles_and_shapes_it_cannot_run():
    qweight, qzeros, scales = random_int4_layer(64, 96, 32, launch.device())
    with pytest.raises(ValueError, match="tile is"):   # the 5 numbers before per_warp
        w4a16_tc_async.w4a16_tc_async(torch.zeros(2, 96).half(), qweight, qzeros, scales, 32, tile=(1, 4, 1, 2, 1))
    with pytest.raises(ValueError, match="warps_k must be"):
        w4a16_tc_async.w4a16_tc_async(torch.zeros(2, 96).half(), qweight, qzeros, scales, 32, tile=(1, 3, 1, 2, 1, 1))
    with pytest.raises(ValueError, match="shared memory"):
        w4a16_tc_async.w4a16_tc_async(torch.zeros(2, 96).half(), qweight, qzeros, scales, 32, tile=(1, 4, 1, 64, 1, 1))
    with pytest.raises(ValueError, match="lie in one group"):   # a warp's 4 slabs of 16 rows span 2 groups of 32
        w4a16_tc_async.w4a16_tc_async(torch.zeros(2, 96).half(), qweight, qzeros, scales, 32, tile=(1, 1, 1, 2, 1, 4))
    qweight, qzeros, scales = random_int4_layer(40, 96, 32, launch.device())
    with pytest.raises(ValueError, match="N % 32"):
        w4a16_tc_async.w4a16_tc_async(torch.zeros(2, 96).half(), qweight, qzeros, scales, 32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_w4a16_tc_async_ring_beyond_48_kb(seed):
    """A ring in more dynamic shared memory than a kernel may have unasked: the launch allows it
    (through Numba the first time, then the fast launch, then overlapped), and the bits agree."""
    tile = (2, 4, 1, 4, 1, 4)
    assert 4 * w4a16_tc_async.shared_words(4, 2, 4, 4, 4) > launch.DEFAULT_SHARED
    assert w4a16_tc_async.check(32, 256, 2048, 128, tile, seed=seed) <= FP16_LEVEL
    x = torch.randn(32, 2048, device="cuda").half()
    layer = random_int4_layer(256, 2048, 128, "cuda")
    first = w4a16_tc_async.w4a16_tc_async(x, *layer, 128, tile=tile)
    again = w4a16_tc_async.w4a16_tc_async(x, *layer, 128, tile=tile)
    was = launch.set_overlap(True)
    try:
        overlapped = w4a16_tc_async.w4a16_tc_async(x, *layer, 128, tile=tile)
    finally:
        launch.set_overlap(was)
    assert torch.equal(first, again) and torch.equal(first, overlapped)


@pytest.mark.parametrize("m", [2, 8, 16, 24, 32])
@pytest.mark.parametrize("n, k", [(12288, 4096), (4096, 4096), (22016, 4096), (4096, 11008)])
def test_w4a16_tc_async_plan(m, n, k):
    """The ring fits a block's shared memory, the blocks one wave, and every block gets stages
    enough for the ring to turn."""
    warps_n, warps_k, splits, stages, min_blocks, per_warp = w4a16_tc_async.plan(m, n, k, 128)
    tiles = -(-m // 8)
    assert stages >= 2 and (per_warp == 4) == ((warps_n, warps_k) == (2, 4) and tiles >= 3)
    assert 4 * w4a16_tc_async.shared_words(tiles, warps_n, warps_k, stages, per_warp) <= \
        w4a16_tc_async.shared_bytes_per_block(min_blocks)
    assert -(-n // (64 * warps_n)) * splits <= min_blocks * launch.sm_count()
    assert k // 16 // (warps_k * per_warp) // splits >= 2


@pytest.mark.parametrize("n, k, g", [(40, 96, 32), (8, 36, 4), (16, 30, 30)])  # groups of 4 rows; torch:
def test_dequant_is_exact(n, k, g, seed):                                    # 30 is not a multiple of 4
    assert dequant.check(n, k, g, seed=seed) == 0.0


@pytest.mark.parametrize("n, k, g", [(6, 592, 16), (3, 1024, 1024)])  # ragged K per lane; per-channel
def test_w8a16_gemv(n, k, g, seed):
    assert w8a16_gemv.check(n, k, g, seed=seed) <= FP16_LEVEL


def test_dispatch_choice():
    assert dispatch.choose(1, 4096, 4096, 128) == "gemv"
    assert dispatch.choose(1, 40, 4096, 128) == "gemm"            # N % 32 != 0: no 16-byte loads
    for m in (2, 3, 16, dispatch.TC_UP_TO):                        # 2-32 rows: tensor cores through shared memory
        assert dispatch.choose(m, 4096, 4096, 128) == "tc_async"
        assert dispatch.choose(m, 22016, 4096, 128) == "tc_async"
    assert dispatch.choose(2, 4072, 4096, 128) == "gemm"           # N % 32 != 0: no 16-byte copies; at 2-3 rows on
    assert dispatch.choose(3, 24424, 4096, 128) == "tc"            # narrow layers the GEMM, on wide ones (N >= 3K) ...
    assert dispatch.choose(4, 4072, 4096, 128) == "tc"             # ... and from 4 rows the register-ring kernel
    assert dispatch.choose(dispatch.TC_UP_TO, 4072, 4096, 128) == "tc"
    assert dispatch.choose(4, 4096, 4032, 96) == "gemm"            # a group size the tensor cores do not take
    assert dispatch.choose(dispatch.GEMM_UP_TO + 1, 4096, 4032, 96) == "dequant_matmul"
    assert dispatch.choose(dispatch.TC_UP_TO + 1, 4096, 4096, 128) == "dequant_matmul"
    assert dispatch.choose(1, 4096, 4096, 48) == "dequant_matmul"  # group size not a multiple of 32


@pytest.mark.parametrize("kernel, m", [("gemv", 1), ("gemm", 3), ("gemm", 11), ("tc", 5), ("tc_async", 3),
                                       pytest.param("tc", 11, marks=pytest.mark.slow),   # two B tiles
                                       pytest.param("tc_async", 18, marks=pytest.mark.slow),   # three
                                       ("dequant_matmul", 4), ("torch", 2)])
def test_w4a16_linear_paths(kernel, m, seed):
    gen = torch.Generator().manual_seed(seed)
    n, k, g = 64, 64, 32
    layer = random_int4_layer(n, k, g, launch.device(), gen)
    x = torch.randn(m, k, generator=gen).half().to(launch.device())
    w = dequantize_int4(*layer, g).double()
    want, abs_want = x.double() @ w.t(), x.double().abs() @ w.abs().t()
    got = dispatch.w4a16_linear(x.view(m, 1, k), *layer, g, kernel=kernel)
    assert got.shape == (m, 1, n)
    tol = measure.dot_tolerance(k, want, abs_want)
    if kernel == "dequant_matmul":
        tol += measure.U16 * 4  # fp16 weights and an fp16 matmul whose accumulation order is cuBLAS's
    measure.assert_close(kernel, got.view(m, n), want, tol)


def test_w8a16_linear_cpu_matches_reference(seed):
    gen = torch.Generator().manual_seed(seed)
    qweight, scales = w8a16_gemv.random_int8_layer(8, 32, 16, generator=gen)
    x = torch.randn(3, 32, generator=gen)
    got = dispatch.w8a16_linear(x, qweight, scales, 16)
    torch.testing.assert_close(got.double(), w8a16_gemv.reference(x, qweight, scales, 16), rtol=1e-5, atol=1e-5)


def test_bad_shapes_are_one_clear_error():
    layer = random_int4_layer(40, 64, 32)
    with pytest.raises(ValueError, match="N % 32"):
        w4a16_gemv.w4a16_gemv(torch.zeros(64, dtype=torch.float16), *layer, 32, tile=(1, 1, 1, 2, 1, 4))
    with pytest.raises(ValueError, match="N % 16"):
        w4a16_gemv.w4a16_gemv(torch.zeros(64, dtype=torch.float16), *layer, 32, tile=(1, 1, 1, 2, 1, 2))
    with pytest.raises(ValueError, match="words per row, got 3"):
        w4a16_gemv.w4a16_gemv(torch.zeros(64, dtype=torch.float16), *layer, 32, tile=(1, 1, 1, 2, 1, 3))
    with pytest.raises(ValueError, match="rows"):
        w4a16_gemm.w4a16_gemm(torch.zeros(9, 64, dtype=torch.float16), *layer, 32)


@pytest.mark.parametrize("step", ["naive", "per_word", "split_k", "fast"])
def test_gemv_steps_of_the_course(step, seed):
    from labkit.kernels import gemv_steps

    gen = torch.Generator().manual_seed(seed)
    n, k, g = 96, 64, 32
    layer = random_int4_layer(n, k, g, launch.device(), gen)
    x = torch.randn(k, generator=gen).half().to(launch.device())
    w = dequantize_int4(*layer, g).double()
    want, abs_want = x.double() @ w.t(), x.double().abs() @ w.abs().t()
    out = measure.poisoned((n,), torch.float16, launch.device())
    gemv_steps.run(step, x, *layer, g, out=out)
    measure.assert_close(step, out, want, measure.dot_tolerance(k, want, abs_want))
