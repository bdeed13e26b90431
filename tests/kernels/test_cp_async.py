"""The shared-memory staging primitives of ptx.py (addresses, cp.async copies and their groups,
32-bit shared reads, float bits) in a small kernel: the same test runs in the simulator and on a GPU."""
import torch
from numba import cuda, uint32, uint64

from labkit.kernels import launch as L
from labkit.kernels import ptx

WORDS = 64  # 16 chunks of 16 bytes, one per thread
ALIGN = ptx.SHARED_ALIGN  # (a module-level constant: Numba needs the alignment as a literal)
wait_one = ptx.cp_async_wait(1)
wait_all = ptx.cp_async_wait(0)


@L.kernel(threads=16)
def staged_copy(src, skip, early, out, values):
    """Thread i copies chunk i of src into shared memory (its address: that of word 0 or 4,
    plus a byte count), chunks 0..7 as the first group and
    8..15 as the second, chunk `skip` zero-filled. Once the first group has landed, early[i] =
    word 0 of chunk (i + 1) % 8; once both have, out = the chunks rotated by one. And values
    doubled through their bits (float_bits, then as_float)."""
    pool = cuda.shared.array(WORDS, uint32, ALIGN)
    i = cuda.threadIdx.x
    for h in range(2):
        if i // 8 == h:
            ptx.cp_async16(pool, 4 * i, ptx.address(src, 4 * (i % 2)) + uint64(16 * (i // 2 * 2)), i != skip)
        ptx.cp_async_commit()
    wait_one()  # the first group has landed; the second may still be in flight
    cuda.syncthreads()
    if i < 8:
        early[i] = ptx.ld_shared_u32(pool, 4 * ((i + 1) % 8))
    wait_all()
    cuda.syncthreads()
    for w in range(4):
        out[4 * i + w] = ptx.ld_shared_u32(pool, 4 * ((i + 1) % 16) + w)
    values[i] = ptx.as_float(ptx.float_bits(values[i] * 2))


def test_cp_async_copies_zero_fills_and_reads_back():
    dev = L.device()
    src = torch.randint(1, 2**31 - 1, (WORDS,), dtype=torch.int32)
    early = torch.zeros(8, dtype=torch.int32, device=dev)
    out = torch.zeros(WORDS, dtype=torch.int32, device=dev)
    values = torch.tensor([1.5, -3.25, -0.0, 6e-8] * 4, dtype=torch.float32)
    doubled = values.clone().to(dev)
    skip = 5
    L.launch(staged_copy, 1, 16, src.to(dev), skip, early, out, doubled)
    chunks = src.view(16, 4).clone()
    chunks[skip] = 0  # copied with valid=False: zeros, src not read
    assert torch.equal(early.cpu(), torch.roll(chunks[:8, 0], -1))
    assert torch.equal(out.cpu(), torch.roll(chunks, -1, dims=0).reshape(-1))
    assert torch.equal(doubled.cpu().view(torch.int32), (values * 2).view(torch.int32))  # -0.0 too
