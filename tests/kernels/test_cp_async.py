"""The shared-memory primitives of ptx.py (shared addresses, cp.async copies and their groups,
32-bit shared reads, ldmatrix, float bits) in small kernels: the same tests run in the simulator
and on a GPU, so the simulator's twins are held to what the hardware does."""
import torch
from numba import cuda, uint32, uint64

from labkit.kernels import launch as L
from labkit.kernels import ptx

WORDS = 64  # 16 chunks of 16 bytes, one per thread
ALIGN = ptx.SHARED_ALIGN  # (a module-level constant: Numba needs the alignment as a literal)
wait_one = ptx.cp_async_wait(1)
wait_all = ptx.cp_async_wait(0)
ldmatrix_x4, ldmatrix_x2 = ptx.ldmatrix(4), ptx.ldmatrix(2)
STRIDE = 12  # words per row of the matrices below: 8 halves and 4 words of padding
MATRIX_WORDS = 32 * STRIDE  # four matrices of 8 rows


@L.kernel(threads=16)
def staged_copy(src, skip, early, out, values):
    """Thread i copies chunk i of src into shared memory (its address: that of word 0 or 4,
    plus a byte count), chunks 0..7 as the first group and
    8..15 as the second, chunk `skip` zero-filled. Once the first group has landed, early[i] =
    word 0 of chunk (i + 1) % 8; once both have, out = the chunks rotated by one. And values
    doubled through their bits (float_bits, then as_float)."""
    pool = cuda.shared.array(WORDS, uint32, ALIGN)
    base = ptx.shared_address(pool)
    i = cuda.threadIdx.x
    for h in range(2):
        if i // 8 == h:
            ptx.cp_async16(base + 16 * i, ptx.address(src, 4 * (i % 2)) + uint64(16 * (i // 2 * 2)), i != skip)
        ptx.cp_async_commit()
    wait_one()  # the first group has landed; the second may still be in flight
    cuda.syncthreads()
    if i < 8:
        early[i] = ptx.ld_shared_u32(base + 16 * ((i + 1) % 8))
    wait_all()
    cuda.syncthreads()
    for w in range(4):
        out[4 * i + w] = ptx.ld_shared_u32(base + 16 * ((i + 1) % 16) + 4 * w)
    values[i] = ptx.as_float(ptx.float_bits(values[i] * 2))


@L.kernel(threads=32)
def matrices(src, out4, out2):
    """Four 8 x 8 matrices of fp16 (src, as words: matrix j's row r at words (8j + r) * STRIDE)
    in shared memory; lane 8j + r gives the address of row 7 - r of matrix j, so each matrix
    arrives upside down. out4[lane, j] = the lane's word of matrix j (x4), out2 the same for x2."""
    pool = cuda.shared.array(MATRIX_WORDS, uint32, ALIGN)
    lane = cuda.threadIdx.x
    for i in range(lane, MATRIX_WORDS, 32):
        pool[i] = src[i]
    cuda.syncthreads()
    row = lane // 8 * 8 + 7 - lane % 8
    at = ptx.shared_address(pool) + 4 * STRIDE * row
    w0, w1, w2, w3 = ldmatrix_x4(at)
    ptx.store_u32x4(out4, 4 * lane, w0, w1, w2, w3)
    w0, w1 = ldmatrix_x2(at)
    ptx.store_u32(out2, 2 * lane, w0)
    ptx.store_u32(out2, 2 * lane + 1, w1)


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


def test_ldmatrix_gives_lane_g_t_word_t_of_row_g():
    """The mma's fragment layout: lane (g, t) holds word t of row g of each matrix, the rows
    where the lanes of that matrix pointed; x2 reads matrices 0 and 1 from lanes 0..15."""
    dev = L.device()
    src = torch.randint(-2**31, 2**31 - 1, (MATRIX_WORDS,), dtype=torch.int32)
    out4 = torch.zeros(32 * 4, dtype=torch.int32, device=dev)
    out2 = torch.zeros(32 * 2, dtype=torch.int32, device=dev)
    L.launch(matrices, 1, 32, src.to(dev), out4, out2)
    rows = src.view(4, 8, STRIDE)[:, :, :4].flip(1)  # [matrix, row the lanes asked for, word]
    g, t = torch.arange(32) // 4, torch.arange(32) % 4
    want = torch.stack([rows[j, g, t] for j in range(4)], dim=1)  # [lane, matrix]
    assert torch.equal(out4.cpu().view(32, 4), want)
    assert torch.equal(out2.cpu().view(32, 2), want[:, :2])
