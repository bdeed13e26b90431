"""Solution to exercise 10: column- and row-parallel shards of a linear layer, and the bytes."""
from __future__ import annotations

import torch


def column_shard(weight: torch.Tensor, bias: torch.Tensor | None, rank: int,
                 world: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    n = weight.shape[0]
    if n % world:
        raise ValueError(f"{world} ranks cannot split {n} output features evenly")
    part = slice(rank * n // world, (rank + 1) * n // world)
    return weight[part], None if bias is None else bias[part]


def row_shard(weight: torch.Tensor, bias: torch.Tensor | None, rank: int,
              world: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    k = weight.shape[1]
    if k % world:
        raise ValueError(f"{world} ranks cannot split {k} input features evenly")
    part = slice(rank * k // world, (rank + 1) * k // world)
    if bias is not None and rank != 0:
        bias = torch.zeros_like(bias)
    return weight[:, part], bias


def allreduce_bytes_per_token(hidden_size: int, num_layers: int, world: int, bytes_per_value: int = 2) -> float:
    messages = 2 * num_layers + 1
    return messages * 2 * (world - 1) / world * hidden_size * bytes_per_value
