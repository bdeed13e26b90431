"""`EngineConfig`: how the engine runs a model, checked once.

`LLM(...)` takes these options as keyword arguments (LMDeploy's and vLLM's names), checks them
in one `EngineConfig` before it loads anything, fills in what depends on the loaded model and
its KV cache (`max_model_len`, `max_num_batched_tokens`), and hands the one object to
`Engine`, which passes it on to `ModelRunner`.
"""
from __future__ import annotations

from dataclasses import dataclass

BACKENDS = ("torch", "numba")
SCHEDULERS = ("continuous", "static")


@dataclass(frozen=True)
class EngineConfig:
    backend: str = "torch"                    # "torch" (any device) or "numba" (labkit.kernels on a GPU)
    max_batch_size: int = 32                  # sequences in one step
    max_num_batched_tokens: int | None = 512  # new tokens in one step; None: by device (LLM)
    max_model_len: int | None = 2048          # prompt + output of one sequence; None: what the cache holds (LLM)
    enable_prefix_caching: bool = True
    scheduler: str = "continuous"             # or "static", the baseline
    use_cuda_graph: bool | None = None        # None: on a GPU
    record_timeline: bool = False             # a StepRecord per step (labkit.profile.timeline)
    compile: bool = False                     # torch.compile the decode step (labkit.engine.ops)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be 'torch' or 'numba', got {self.backend!r}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be 'continuous' or 'static', got {self.scheduler!r}")
        for name in ("max_batch_size", "max_num_batched_tokens", "max_model_len"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
