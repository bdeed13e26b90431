"""Run one scheduled step through the model over the paged KV cache.

A step mixes requests at different stages: some decode one token, some prefill a chunk of
their prompt. The runner flattens all their new tokens into one row (B=1, T=all tokens), so
every linear layer runs once for the whole step, and passes explicit positions. Only
attention needs to know where one request ends and the next begins: that is the
`PagedAttention` context the model calls through its `cache.attend` hook. Decodes come
first in the row and are attended to together over their block tables; each prefill chunk
is attended to on its own (there are few of them per step).

Backends: `torch` gathers the blocks and calls `scaled_dot_product_attention` (any device,
the reference); `numba` writes K/V and runs decode attention with the kernels of
`labkit.kernels`. On a GPU, decode-only steps replay a CUDA graph captured per batch-size
bucket: a decode step is hundreds of small launches, and replaying them costs a few
microseconds instead of tens per launch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from labkit.engine.kv_cache import PagedKVCache
from labkit.engine.scheduler import Batch
from labkit.engine.sequence import Sequence
from labkit.models.llama import Llama


@dataclass
class StepInputs:
    """The flattened step. Decodes are tokens [0, num_decodes); prefill chunks follow."""
    input_ids: torch.Tensor          # [N] int64
    positions: torch.Tensor          # [N] int64
    slot_mapping: torch.Tensor       # [N] int64: block_id * block_size + offset of each new token
    block_tables: torch.Tensor       # [num_decodes, max_blocks] int32, -1 where unused
    context_lens: torch.Tensor       # [num_decodes] int32, cached tokens including the new one
    logits_indices: torch.Tensor     # [S] int64: the last token of each sequence that samples
    prefills: list[tuple[int, int, int, torch.Tensor]] = field(default_factory=list)  # (start, n, context, blocks)

    @property
    def num_decodes(self) -> int:
        return self.context_lens.shape[0]


class PagedAttention:
    """The model's `cache`: writes the step's K/V into the paged cache, attends over it."""

    def __init__(self, kv: PagedKVCache, inputs: StepInputs):
        self.kv, self.inputs = kv, inputs
        self.mask: torch.Tensor | None = None

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        inp, nd = self.inputs, self.inputs.num_decodes
        q, k, v = q[0], k[0], v[0]                      # [N, H, D], [N, H_kv, D]
        self.write(layer, inp.slot_mapping, k, v)
        parts = [self.decode(layer, q[:nd])] if nd else []
        for start, n, context, blocks in inp.prefills:
            if context == n:   # nothing cached before this chunk: attend to the fresh K/V directly
                keys, values = k[start:start + n], v[start:start + n]
            else:
                keys, values = self._contiguous(layer, blocks, context)
            parts.append(_causal(q[start:start + n], keys, values))
        return torch.cat(parts)[None] if len(parts) > 1 else parts[0][None]

    def write(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        self.kv.write(layer, slots, k, v)

    def decode(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        """One query per sequence [B, H, D] against its blocks: gather, mask, softmax."""
        tables, lens = self.inputs.block_tables, self.inputs.context_lens
        B, max_blocks = tables.shape
        bs = self.kv.block_size
        k, v = self.kv.gather(layer, tables.long())     # [B, blocks, H_kv, bs, D]; -1 is the scratch block
        k = k.transpose(1, 2).reshape(B, k.shape[2], max_blocks * bs, -1)
        v = v.transpose(1, 2).reshape(B, v.shape[2], max_blocks * bs, -1)
        if layer == 0 or self.mask is None:   # once per forward (inside a CUDA graph too)
            self.mask = (torch.arange(max_blocks * bs, device=lens.device) < lens[:, None])[:, None, None, :]
        out = F.scaled_dot_product_attention(q[:, :, None], k, v, attn_mask=self.mask,
                                             enable_gqa=q.shape[1] != k.shape[1])
        return out[:, :, 0]

    def _contiguous(self, layer: int, blocks: torch.Tensor, context: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A prefill's cached context as [context, H_kv, D]."""
        k, v = self.kv.gather(layer, blocks)            # [n_blocks, H_kv, bs, D]
        k = k.transpose(0, 1).flatten(1, 2)[:, :context].transpose(0, 1)
        v = v.transpose(0, 1).flatten(1, 2)[:, :context].transpose(0, 1)
        return k, v


def _causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q [n, H, D] are the last n of the S keys [S, H_kv, D]: query i sees keys 0 .. S - n + i."""
    n, S = q.shape[0], k.shape[0]
    mask = torch.ones(n, S, dtype=torch.bool, device=q.device).tril(S - n) if n > 1 else None
    out = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1),
                                         attn_mask=mask, enable_gqa=q.shape[1] != k.shape[1])
    return out.transpose(0, 1)


class NumbaAttention(PagedAttention):
    """Paged attention with the kernels of `labkit.kernels` (write and decode); prefill
    chunks stay in torch (compute-bound, where cuBLAS/SDPA are already good)."""

    def write(self, layer, slots, k, v):
        from labkit.engine import kernel_glue

        kernel_glue.write_kv(self.kv, layer, slots, k, v)

    def decode(self, layer, q):
        from labkit.engine import kernel_glue

        return kernel_glue.decode_attention(self.kv, layer, q, self.inputs.block_tables, self.inputs.context_lens)


class ModelRunner:
    def __init__(self, model: Llama, kv: PagedKVCache, backend: str = "torch", max_batch_size: int = 32,
                 max_model_len: int = 2048, use_cuda_graph: bool | None = None):
        if backend not in ("torch", "numba"):
            raise ValueError(f"backend must be 'torch' or 'numba', got {backend!r}")
        self.model, self.kv, self.backend = model, kv, backend
        self.device = model.lm_head.weight.device
        self.attention_cls = NumbaAttention if backend == "numba" else PagedAttention
        self.max_blocks = -(-max_model_len // kv.block_size)
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, StepInputs, torch.Tensor]] = {}
        if use_cuda_graph is None:
            use_cuda_graph = self.device.type == "cuda"
        if use_cuda_graph:
            self.capture_graphs(max_batch_size)

    # ------------------------------------------------------------------ inputs
    def prepare(self, batch: Batch) -> tuple[StepInputs, list[Sequence]]:
        """Flatten a batch (decodes first); returns the inputs and the sequences that sample."""
        bs = self.kv.block_size
        order = sorted(range(len(batch)), key=lambda i: batch.num_tokens[i] != 1)
        ids, pos, slots, tables, lens, logits_at, prefills, sampling = [], [], [], [], [], [], [], []
        for i in order:
            seq, n = batch.seqs[i], batch.num_tokens[i]
            start, context = len(ids), seq.num_computed + n
            ids += seq.token_ids[seq.num_computed:context]
            pos += range(seq.num_computed, context)
            slots += [seq.block_table[p // bs] * bs + p % bs for p in range(seq.num_computed, context)]
            used = seq.block_table[:-(-context // bs)]
            if n == 1:
                tables.append(used)
                lens.append(context)
            else:
                prefills.append((start, n, context, used))
            if context == len(seq):
                logits_at.append(len(ids) - 1)
                sampling.append(seq)
        width = max((len(t) for t in tables), default=0)
        dev = self.device
        tensor = lambda x, dt: torch.tensor(x, dtype=dt, device=dev)  # noqa: E731
        inputs = StepInputs(
            input_ids=tensor(ids, torch.long), positions=tensor(pos, torch.long),
            slot_mapping=tensor(slots, torch.long),
            block_tables=tensor([t + [-1] * (width - len(t)) for t in tables], torch.int32).reshape(len(tables), width),
            context_lens=tensor(lens, torch.int32), logits_indices=tensor(logits_at, torch.long),
            prefills=[(s, n, c, tensor(b, torch.long)) for s, n, c, b in prefills])
        return inputs, sampling

    # ------------------------------------------------------------------ forward
    def forward(self, inputs: StepInputs) -> torch.Tensor:
        """Logits [S, V] (float32) at `logits_indices`.

        The model's own pieces in order, as `Llama.forward` runs them, except that the final
        norm and the vocabulary projection (the largest matmul of a small model) run only on
        the rows that sample, which need not be the last of the flattened row.
        """
        m = self.model
        x = m.model.embed_tokens(inputs.input_ids[None])
        cos, sin = m.rope(inputs.positions[None], x.dtype)
        cache = self.attention_cls(self.kv, inputs)
        for layer in m.model.layers:
            x = layer(x, cos, sin, cache)
        return m.lm_head(m.model.norm(x[0, inputs.logits_indices])).float()

    @torch.inference_mode()
    def run(self, batch: Batch) -> tuple[torch.Tensor, list[Sequence]]:
        inputs, sampling = self.prepare(batch)
        if not inputs.prefills and self.graphs and inputs.num_decodes <= max(self.graphs):
            return self._replay(inputs), sampling
        return self.forward(inputs), sampling

    # ------------------------------------------------------------------ CUDA graphs
    def graph_buckets(self, max_batch_size: int) -> list[int]:
        return sorted({b for b in (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128) if b < max_batch_size} | {max_batch_size})

    def capture_graphs(self, max_batch_size: int) -> None:
        """One graph per batch-size bucket, over static input buffers padded to the bucket.

        Padding rows write to the scratch block and attend to one token of it. Buckets are
        captured largest first so the smaller ones reuse its memory pool.
        """
        pool, dev = None, self.device
        for B in reversed(self.graph_buckets(max_batch_size)):
            scratch = self.kv.scratch_block
            inputs = StepInputs(
                input_ids=torch.zeros(B, dtype=torch.long, device=dev),
                positions=torch.zeros(B, dtype=torch.long, device=dev),
                slot_mapping=torch.full((B,), scratch * self.kv.block_size, dtype=torch.long, device=dev),
                block_tables=torch.full((B, self.max_blocks), scratch, dtype=torch.int32, device=dev),
                context_lens=torch.ones(B, dtype=torch.int32, device=dev),
                logits_indices=torch.arange(B, device=dev))
            with torch.inference_mode():
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(2):   # warm up: kernels compiled, workspaces allocated
                        self.forward(inputs)
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    out = self.forward(inputs)
            pool = graph.pool()
            self.graphs[B] = (graph, inputs, out)
        torch.cuda.synchronize()

    def _replay(self, inputs: StepInputs) -> torch.Tensor:
        B = inputs.num_decodes
        bucket = min(b for b in self.graphs if b >= B)
        graph, static, out = self.graphs[bucket]
        scratch = self.kv.scratch_block
        static.input_ids[:B] = inputs.input_ids
        static.positions[:B] = inputs.positions
        static.slot_mapping.fill_(scratch * self.kv.block_size)[:B] = inputs.slot_mapping
        static.block_tables.fill_(scratch)[:B, :inputs.block_tables.shape[1]] = inputs.block_tables
        static.context_lens.fill_(1)[:B] = inputs.context_lens
        graph.replay()
        return out[:B]
