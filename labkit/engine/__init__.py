"""The inference engine: paged KV cache, prefix caching, continuous batching, CUDA graphs.

Read it in this order: `sequence` (a request's state), `block_manager` (blocks, reference
counts, the prefix hash chain), `scheduler` (who runs in the next step), `kv_cache` (the
cache's memory and how many blocks fit), `paged_attention` (attention over it, torch and
kernels), `model_runner` (one step through the model over the paged cache), `engine` (the
step loop), `config` (the engine's options, checked once), `llm` (the front object:
generate, chat, stream). Around them: `fuse` (merged projections), `weights` (int8/int4
weights for speed), `ops` (the kernels as custom ops for torch.compile), `workload` (the
requests notebooks and benchmarks drive it with), `bench` (`labkit bench engine`), `widgets`
(notebook 08's live benchmark).
"""
from labkit.engine.engine import StreamDelta
from labkit.engine.llm import LLM, ChatSession, RequestOutput
from labkit.models.sampling import SamplingParams

__all__ = ["LLM", "ChatSession", "RequestOutput", "SamplingParams", "StreamDelta"]
