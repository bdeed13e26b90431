"""2:4 weights as PyTorch semi-structured sparse tensors, for the sparse tensor cores.

A weight pruned 2:4 (two of every four consecutive inputs kept) can be stored compressed:
the kept half of the values plus 2-bit indices of where they were, 9/16 of the dense fp16
bytes. NVIDIA GPUs from Ampere on multiply such a matrix at up to twice the dense rate.
`torch.sparse.to_sparse_semi_structured` builds that tensor and routes `F.linear` through
cuSPARSELt (or CUTLASS); swapping a linear's weight for it is all a model needs.

Whether that is faster is a measurement, not a promise: the speed-up exists only where the
matmul is compute-bound (prefill, large batches), the library call has a fixed cost, and the
decode step of a small batch is bound by reading the weights, which 2:4 shrinks only to 9/16.
`labkit bench prune --only sparse24` measures it (docs/benchmarks.md).
"""
from __future__ import annotations

import torch
from torch import nn

from labkit.models.llama import Llama
from labkit.prune.oneshot import layer_linears


def check_two_four(weight: torch.Tensor) -> None:
    """A ValueError unless every group of four consecutive inputs has at most two non-zeros."""
    if weight.shape[1] % 4 or ((weight != 0).view(weight.shape[0], -1, 4).sum(-1) > 2).any():
        raise ValueError("the weight is not 2:4 sparse (prune it with pattern '2:4' first)")


@torch.no_grad()
def to_semi_structured(model: Llama) -> Llama:
    """Replace every 2:4-pruned projection weight of `model` (fp16/bf16, on a GPU) by its
    compressed semi-structured tensor, in place."""
    from torch.sparse import to_sparse_semi_structured

    for layer in model.model.layers:
        for linear in layer_linears(layer).values():
            check_two_four(linear.weight)
            linear.weight = nn.Parameter(to_sparse_semi_structured(linear.weight.detach()), requires_grad=False)
    return model
