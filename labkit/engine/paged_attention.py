"""Attention over the paged KV cache for one flattened step: the model's `cache.attend` hook.

A step's new tokens sit in one row (`StepInputs`, built by `labkit.engine.model_runner`):
decodes first, attended to together over their block tables; then prefill chunks: those
after cached tokens one by one, fresh ones together by length.

- `PagedAttention` (torch backend, any device, the reference) writes and gathers rows of the
  cache (`PagedKVCache.rows`) with one `index_copy_` / `index_select` per layer and attends
  with `scaled_dot_product_attention`: decodes together, each KV head's query heads as its
  rows of queries; fresh prefill chunks of one length together, the others one by one.
- `NumbaAttention` writes K/V and runs decode attention with the kernels of `labkit.kernels`
  (fp16, int8 or int4 caches, through `labkit.engine.ops` so that `torch.compile` sees them);
  in steps of decodes only, one kernel per layer also rotates q and k and writes K/V.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from labkit.engine import ops
from labkit.engine.kv_cache import PagedKVCache
from labkit.models.llama import attention


@dataclass
class StepInputs:
    """The flattened step. Decodes are tokens [0, num_decodes); prefill chunks follow."""
    input_ids: torch.Tensor          # [N] int64
    positions: torch.Tensor          # [N] int64
    slot_mapping: torch.Tensor       # [N] int64: block_id * block_size + offset of each new token
    block_tables: torch.Tensor       # [num_decodes, max_blocks] int32, -1 where unused
    context_lens: torch.Tensor       # [num_decodes] int32, cached tokens including the new one
    logits_indices: torch.Tensor     # [S] int64: the last token of each sequence that samples
    max_context: int = 0             # longest decode context (host side: shapes depend on it)
    needs_mask: bool = True          # False: one decode, read exactly its context
    prefills: list[tuple[int, int, int, torch.Tensor]] = field(default_factory=list)  # (start, n, context, blocks)

    @property
    def num_decodes(self) -> int:
        return self.context_lens.shape[0]



_rotary = {"inside": os.environ.get("LABKIT_ROTARY_IN_ATTENTION", "1") != "0"}


def set_rotary_in_attention(wanted: bool) -> bool:
    """Whether `NumbaAttention` rotates q and k and writes K/V inside attention in decode-only
    steps traced or run from now on (on unless LABKIT_ROTARY_IN_ATTENTION=0); returns the
    previous setting."""
    previous, _rotary["inside"] = _rotary["inside"], wanted
    return previous


class PagedAttention:
    """The model's `cache` for one step (torch backend): writes the step's K/V into the paged
    cache and attends over it. The index arithmetic is done once per step, not per layer."""

    def __init__(self, kv: PagedKVCache, inputs: StepInputs):
        self.kv, self.inputs = kv, inputs
        self.ready = False

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if layer == 0 or not self.ready:   # (re)computed inside a captured CUDA graph too
            self.prepare()
        nd = self.inputs.num_decodes
        q, k, v = q[0], k[0], v[0]                      # [N, H, D], [N, H_kv, D]
        self.write(layer, k, v)
        if not self.inputs.prefills:
            return self.decode(layer, q)[None]
        out = torch.empty_like(q)
        if nd:
            out[:nd] = self.decode(layer, q[:nd])
        for n, rows in self.fresh:   # chunks with nothing cached before them, of one length n
            def chunks(x: torch.Tensor) -> torch.Tensor:   # [G, heads, n, D]
                return x.index_select(0, rows).unflatten(0, (-1, n)).transpose(1, 2)
            out.index_copy_(0, rows, _causal(chunks(q), chunks(k), chunks(v)).transpose(1, 2).flatten(0, 1))
        for start, n, rows in self.cached:
            keys, values = self.kv.read(layer, rows)   # [H_kv, context, D]
            out[start:start + n] = _causal(q[None, start:start + n].transpose(1, 2), keys[None], values[None])[0] \
                .transpose(0, 1)
        return out[None]

    def prepare(self) -> None:
        """The prefill chunks' rows: a chunk after cached tokens reads them from the cache; fresh
        chunks (a whole prompt, or its first chunk) attend to their own K/V, all those of one
        length in one call (a wave of same-length prompts: one call per layer, not one each)."""
        inp, kv, bs = self.inputs, self.kv, self.kv.block_size
        dev = inp.slot_mapping.device
        fresh: dict[int, list[int]] = {}
        for start, n, context, _ in inp.prefills:
            if context == n:
                fresh.setdefault(n, []).extend(range(start, start + n))
        self.fresh = [(n, torch.tensor(rows, device=dev)) for n, rows in fresh.items()]
        self.cached = [(start, n, kv.rows(blocks[:, None] * bs + torch.arange(bs, device=dev)).flatten(0, 1)[:context].T)
                       for start, n, context, blocks in inp.prefills if context != n]   # rows [H_kv, context]
        self.prepare_decodes()
        self.ready = True

    def prepare_decodes(self) -> None:
        """Rows to write this step's K/V to; rows to read each decode's keys from, and the mask."""
        inp, kv, bs = self.inputs, self.kv, self.kv.block_size
        self.write_rows = kv.rows(inp.slot_mapping)                     # [N, H_kv]
        if inp.num_decodes:
            t = torch.arange(inp.max_context, device=inp.slot_mapping.device)
            tables = inp.block_tables.long()
            tables = torch.where(tables < 0, kv.scratch_block, tables)
            self.read_rows = kv.rows(tables[:, t // bs] * bs + t % bs).transpose(1, 2)   # [B, H_kv, S]
            self.mask = t < inp.context_lens[:, None, None, None] if inp.needs_mask else None   # [B, 1, 1, S]

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        self.kv.write(layer, self.write_rows, k, v)

    def decode(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        """One query per sequence, q [B, H, D], against its cached keys. The query heads that
        share a KV head go in as that head's rows of queries (no mask between them: they sit
        at the same position), so SDPA reads each K/V row once for the whole group: on a CPU at
        batch 1 faster than SDPA's own GQA or float32 matmuls, and no slower at larger batches."""
        B, H, D = q.shape
        k, v = self.kv.read(layer, self.read_rows)      # [B, H_kv, S, D]
        q = q.view(B, k.shape[1], H // k.shape[1], D)
        return attention(q, k, v, self.mask).reshape(B, H, D)   # (SDPA on a GPU may return it strided)


def _causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q [G, H, n, D] are the last n of the S keys [G, H_kv, S, D] of each of G chunks: query
    i sees keys 0 .. S - n + i.

    Always 4-D: given 3-D inputs, SDPA on a GPU falls back to its unfused "math"
    implementation (host time and a materialized score matrix per layer and chunk)."""
    n, S = q.shape[2], k.shape[2]
    mask = torch.ones(n, S, dtype=torch.bool, device=q.device).tril(S - n) if n > 1 else None
    return attention(q, k, v, mask)


class NumbaAttention(PagedAttention):
    """Decode attention and K/V writes with the kernels of `labkit.kernels` (fp16, int8 or int4
    caches); prefill chunks stay in torch, where SDPA is already good at this size.

    In a step of decodes only, the model hands over q, k and v before the rotary embedding
    (`rotary_inside`), and one kernel per layer rotates them, writes the new K/V and attends
    (`attend_unrotated`): the rotary and K/V-write kernels of the step are gone. Steps with
    prefill chunks rotate in the model and write K/V with their own kernel, and so do all steps
    while it is turned off (`LABKIT_ROTARY_IN_ATTENTION=0`, `set_rotary_in_attention(False)`; read
    when a step is traced or runs: a captured graph keeps what it was captured with)."""

    @property
    def rotary_inside(self) -> bool:
        return _rotary["inside"] and not self.inputs.prefills

    def attend_unrotated(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor,
                         sin: torch.Tensor) -> torch.Tensor:
        """`attend` for q [1, N, H, D], k and v [1, N, H_kv, D] not rotated yet, and the cos/sin
        [1, N, 1, D] of their positions (the model's `rope`)."""
        kv, inp = self.kv, self.inputs
        d = q.shape[-1]
        return ops.rope_attention(q[0].contiguous(), k[0].contiguous(), v[0].contiguous(),
                                  cos.reshape(-1, d).contiguous(), sin.reshape(-1, d).contiguous(), inp.slot_mapping,
                                  kv.k[layer], kv.v[layer], *kv.scale_zero(layer), inp.block_tables,
                                  inp.context_lens, kv.bits, inp.max_context)[None]

    def prepare_decodes(self) -> None:
        pass   # the kernels take the slot mapping and block tables as they are

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        kv = self.kv
        ops.write_kv(k, v, self.inputs.slot_mapping, kv.k[layer], kv.v[layer], *kv.scale_zero(layer), kv.bits)

    def decode(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        kv, inp = self.kv, self.inputs
        return ops.paged_attention(q.contiguous(), kv.k[layer], kv.v[layer], *kv.scale_zero(layer), inp.block_tables,
                                   inp.context_lens, kv.bits, inp.max_context)
