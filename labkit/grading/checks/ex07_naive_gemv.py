"""Checks for exercise 07b: the naive dequantizing GEMV kernel (run in the CUDA simulator on a CPU)."""
from __future__ import annotations

import torch

from labkit.grading import check
from labkit.kernels import launch, measure
from labkit.kernels.packing import AWQ_ORDER, dequantize_int4, pack_int4, random_int4_layer, unpack_int4


def _layer(n: int, k: int, g: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    layer = random_int4_layer(n, k, g, launch.device(), gen)
    return torch.randn(k, generator=gen).half().to(launch.device()), layer


def _run(impl, x, layer, g):
    n = layer[0].shape[1] * 8
    out = measure.poisoned((n,), torch.float16, launch.device())
    impl.gemv(x, *layer, g, out)
    return out.cpu()


def _sequential_layer(layer):
    """What a kernel that reads column 8j + i from nibble i computes: column i gets column AWQ_ORDER[i]'s codes."""
    qweight, qzeros, scales = layer
    repack = lambda t: pack_int4(unpack_int4(t.cpu()).view(t.shape[0], -1, 8)[:, :, list(AWQ_ORDER)]
                                 .reshape(t.shape[0], -1))  # noqa: E731
    return repack(qweight), repack(qzeros), scales.cpu()


@check(points=3)
def matches_the_reference(impl):
    for n, k, g, seed in ((64, 96, 32, 1), (32, 128, 64, 4), (16, 64, 64, 5)):   # 64 = K: a single group
        x, layer = _layer(n, k, g, seed=seed)
        w = dequantize_int4(*[t.cpu() for t in layer], g).double()
        want, abs_want = x.cpu().double() @ w.t(), x.cpu().double().abs() @ w.abs().t()
        try:
            got = _run(impl, x, layer, g)
        except IndexError as e:
            raise AssertionError(f"N={n}, K={k}, group_size={g}: an index past the end of an array ({e}). Row k "
                                 "uses group k // group_size (the argument): qzeros and scales have K // group_size "
                                 "rows") from None
        assert not torch.isnan(got.float()).any(), f"{int(torch.isnan(got.float()).sum())} of {n} outputs were not written"
        err = measure.rel_error(got, want)
        if err > measure.dot_tolerance(k, want, abs_want):
            wrong = x.cpu().double() @ dequantize_int4(*_sequential_layer(layer), g).double().t()
            if measure.rel_error(got, wrong) < 1e-2:
                raise AssertionError("column n is nibble AWQ_REVERSE_ORDER[n % 8] of its word, not nibble n % 8")
            raise AssertionError(f"N={n}, K={k}, group_size={g}: relative error {err:.3g} against x @ W.T "
                                 "(expected below 1e-3); row k uses the zero points and scales of group k // group_size")


@check(points=1)
def every_column_written_once(impl):
    n, k, g = 40, 64, 32  # 40 columns: the second block of 32 threads has 24 idle threads
    x, layer = _layer(n, k, g, seed=2)
    guarded = measure.poisoned((n + 32,), torch.float16, launch.device())  # out, then 32 guard elements
    try:
        impl.gemv(x, *layer, g, guarded[:n])
    except IndexError as e:   # the simulator checks bounds; a GPU would read and write garbage instead
        raise AssertionError(f"a thread with n >= N went on and indexed past the end of an array ({e}): "
                             "threads wrote past the end of out or read past qweight; check n < out.shape[0] "
                             "before doing anything") from None
    got = guarded.cpu().float()
    missing = int(torch.isnan(got[:n]).sum())
    assert missing == 0, f"{missing} of {n} outputs were not written"
    assert bool(torch.isnan(got[n:]).all()), "threads with n >= N wrote past the end of out: check n < out.shape[0]"


@check(points=1)
def each_row_uses_its_own_group(impl):
    n, k, g = 32, 96, 32
    _, layer = _layer(n, k, g, seed=3)
    x = torch.zeros(k, dtype=torch.float16, device=launch.device())
    x[40] = 1  # row 40 is in group 40 // 32 = 1
    want = dequantize_int4(*[t.cpu() for t in layer], g).t()[40].double()
    got = _run(impl, x, layer, g).double()
    assert torch.allclose(got, want, rtol=2e-3, atol=1e-4), (
        "with x = one-hot at k = 40 the output must be row 40 of W.T, which uses the zero points and "
        "scales of group 40 // group_size = 1")
