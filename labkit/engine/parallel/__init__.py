"""Tensor parallelism: one model split over several GPUs (or CPU processes), on torch.distributed.

`shard` says what each rank keeps and where the ranks communicate; `group` starts the ranks
and hands them the steps. `LLM(..., tp=N)` is the way in (docs/parallel.md).
"""
from labkit.engine.parallel.group import TensorParallel
from labkit.engine.parallel.shard import Comm, check_split, shard

__all__ = ["Comm", "TensorParallel", "check_split", "shard"]
