"""Exercise 10 (chapter 10): split a linear layer over ranks, and count the bytes they exchange.

Fill in the functions below with plain torch operations, then run the check in notebook 10, or:

    labkit grade ex10_tensor_parallel --impl exercises/ex10_tensor_parallel.py

A linear layer computes y = x @ W.T + b with W of shape [N, K] (N outputs, K inputs) and b of
shape [N] (or None). `world` ranks share it, `rank` is 0 .. world - 1, and each rank keeps one
contiguous block, in rank order. Return new tensors (slices are fine): the caller still needs
the whole layer, so do not write into `weight` or `bias`.
"""
from __future__ import annotations

import torch


def column_shard(weight: torch.Tensor, bias: torch.Tensor | None, rank: int,
                 world: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Column-parallel: rank `rank` keeps output features [rank * N / world, (rank + 1) * N / world),
    i.e. those rows of W and the same entries of b (None stays None). Every rank's y side by
    side is the layer's y. Raise ValueError when `world` does not divide N."""
    raise NotImplementedError(
        "write column_shard (a rank's block of output features) in exercises/ex10_tensor_parallel.py; "
        "notebook 10, section '1 · What is split, and why', explains it")


def row_shard(weight: torch.Tensor, bias: torch.Tensor | None, rank: int,
              world: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Row-parallel: rank `rank` keeps input features [rank * K / world, (rank + 1) * K / world),
    i.e. those columns of W; it multiplies the matching slice of x and gets a partial sum of y.
    The all-reduce adds the ranks' partial sums, so the bias must be counted once: rank 0 keeps
    b, the other ranks get zeros of b's shape (None stays None). Raise ValueError when `world`
    does not divide K."""
    raise NotImplementedError(
        "write row_shard (a rank's block of input features; the bias once) in exercises/ex10_tensor_parallel.py; "
        "notebook 10, section '1 · What is split, and why', explains it")


def allreduce_bytes_per_token(hidden_size: int, num_layers: int, world: int, bytes_per_value: int = 2) -> float:
    """Bytes one GPU sends per generated token in the all-reduces of a Megatron-split model
    (batch 1): two per layer (after attention, after the MLP) and one for the embedding split
    by vocabulary, each a message of `hidden_size` values of `bytes_per_value` bytes. A ring
    all-reduce of m bytes sends 2 (world - 1) / world * m bytes per GPU; one GPU sends nothing."""
    raise NotImplementedError(
        "write allreduce_bytes_per_token in exercises/ex10_tensor_parallel.py; "
        "notebook 10, section '3 · Bytes on the wire per token', explains it")
