"""Checks for exercise 10: column- and row-parallel shards against the whole layer, the bytes
against `labkit.profile.parallel`."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from labkit.grading import check
from labkit.profile.configs import preset
from labkit.profile.parallel import comm_bytes_per_token

# (N outputs, K inputs, world, with a bias): worlds 1, 2 and 4, N and K each split unevenly by none
CASES = [(8, 12, 1, True), (8, 12, 2, True), (12, 8, 4, False), (16, 4, 4, True), (6, 10, 2, False)]


def _layer(n: int, k: int, bias: bool, seed: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    w, x = torch.randn(n, k, generator=gen), torch.randn(3, k, generator=gen)
    return w, (torch.randn(n, generator=gen) if bias else None), x


def _pair(out, name: str):
    assert isinstance(out, tuple) and len(out) == 2, f"{name} should return (weight, bias), got {type(out).__name__}"
    return out


@check(points=3)
def column_shards_side_by_side_give_the_layer(impl):
    for seed, (n, k, world, has_bias) in enumerate(CASES):
        w, b, x = _layer(n, k, has_bias, seed)
        parts = [_pair(impl.column_shard(w, b, r, world), "column_shard") for r in range(world)]
        for r, (wr, br) in enumerate(parts):
            if tuple(wr.shape) != (n // world, k):
                hint = (" That is a block of the inputs (columns of W): column-parallel keeps a block of the "
                        "outputs, rows of W." if tuple(wr.shape) == (n, k // world) else "")
                raise AssertionError(f"rank {r} of {world}: weight of shape {tuple(wr.shape)} for a [{n}, {k}] "
                                     f"layer, expected ({n // world}, {k}).{hint}")
            assert (br is None) == (b is None), "keep the bias (its block) when there is one, None when there is none"
        got = torch.cat([F.linear(x, wr, br) for wr, br in parts], -1)
        if not torch.allclose(got, F.linear(x, w, b), atol=1e-5):
            hint = ""
            if world > 1 and torch.equal(parts[0][0], parts[1][0]):
                hint = " Every rank returned the same block: rank r starts at r * N / world."
            raise AssertionError(f"[{n}, {k}] over {world} ranks: the ranks' outputs side by side are not the "
                                 f"layer's output.{hint}")


@check(points=3)
def row_shard_partial_sums_add_up_to_the_layer(impl):
    for seed, (n, k, world, has_bias) in enumerate(CASES):
        w, b, x = _layer(n, k, has_bias, seed)
        parts = [_pair(impl.row_shard(w, b, r, world), "row_shard") for r in range(world)]
        for r, (wr, br) in enumerate(parts):
            if tuple(wr.shape) != (n, k // world):
                hint = (" That is a block of the outputs (rows of W): row-parallel keeps a block of the "
                        "inputs, columns of W." if tuple(wr.shape) == (n // world, k) else "")
                raise AssertionError(f"rank {r} of {world}: weight of shape {tuple(wr.shape)} for a [{n}, {k}] "
                                     f"layer, expected ({n}, {k // world}).{hint}")
        width = k // world
        got = sum(F.linear(x[:, r * width:(r + 1) * width], wr, br) for r, (wr, br) in enumerate(parts))
        want = F.linear(x, w, b)
        if not torch.allclose(got, want, atol=1e-4):
            hint = ""
            if b is not None and torch.allclose(got, want + (world - 1) * b, atol=1e-4):
                hint = (" The bias was added on every rank, so the all-reduce counted it "
                        f"{world} times: only rank 0 keeps it, the others get zeros.")
            elif world > 1 and torch.equal(parts[0][0], parts[1][0]):
                hint = " Every rank returned the same block: rank r starts at r * K / world."
            raise AssertionError(f"[{n}, {k}] over {world} ranks: the partial sums do not add up to the layer's "
                                 f"output.{hint}")
        if b is not None and world > 1:
            assert parts[1][1] is not None and tuple(parts[1][1].shape) == tuple(b.shape), \
                "ranks other than 0 get zeros of the bias's shape (not None), so every rank computes alike"


@check(points=1)
def uneven_splits_are_refused(impl):
    w, b, _ = _layer(10, 6, True, 0)
    for name, fn, dim in (("column_shard", impl.column_shard, "10 outputs"), ("row_shard", impl.row_shard, "6 inputs")):
        try:
            fn(w, b, 0, 4)
        except ValueError:
            continue
        raise AssertionError(f"{name} over 4 ranks of a layer with {dim} should raise ValueError: "
                             "the blocks cannot be equal (real engines refuse such a split)")


@check(points=2)
def bytes_per_token_match_the_ring_all_reduce(impl):
    for name in ("Llama-2-7B", "Llama-2-70B"):
        cfg = preset(name)
        for world, value_bytes in ((1, 2), (2, 2), (4, 2), (8, 4)):
            want = comm_bytes_per_token(cfg, world, act_bits=8 * value_bytes)["all_reduce"]
            got = impl.allreduce_bytes_per_token(cfg.hidden_size, cfg.num_hidden_layers, world, value_bytes)
            if abs(float(got) - want) > 1e-6 * max(want, 1):
                hint = ""
                message = cfg.hidden_size * value_bytes
                if world > 1 and abs(got - (2 * cfg.num_hidden_layers + 1) * message) < 1:
                    hint = " Each GPU sends 2 (world - 1) / world times a message in a ring all-reduce, not the message once."
                elif world > 1 and abs(got - 2 * cfg.num_hidden_layers * 2 * (world - 1) / world * message) < 1:
                    hint = " Count the embedding's all-reduce too: 2 per layer + 1."
                elif world > 1 and abs(got - (cfg.num_hidden_layers + 1) * 2 * (world - 1) / world * message) < 1:
                    hint = " Two all-reduces per layer: after attention and after the MLP."
                raise AssertionError(f"{name} over {world} GPUs at {value_bytes} bytes a value: got {got}, "
                                     f"expected {want:g} bytes per token.{hint}")


@check(points=1)
def the_whole_layer_is_left_alone(impl):
    w, b, _ = _layer(8, 8, True, 5)
    before = (w.clone(), b.clone())
    for r in range(2):
        impl.column_shard(w, b, r, 2)
        impl.row_shard(w, b, r, 2)
    assert torch.equal(w, before[0]), "the weight was changed: return slices or copies, do not write into it"
    assert torch.equal(b, before[1]), ("the bias was changed (zeroed in place?): the caller still needs it whole; "
                                       "give the other ranks a new tensor of zeros")
