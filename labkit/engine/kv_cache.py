"""The paged KV cache's memory: K and V blocks for every layer, optionally quantized.

Layout (docs/internals.md): per layer, `k`/`v` are `[num_blocks, num_kv_heads, block_size,
head_dim]`; token slot `s` lives in block `s // block_size` at offset `s % block_size`.
With `quant_policy` 8 or 4 (LMDeploy's names; `bits` is what the kernels take, from
`labkit.quant.kv.kv_bits`) each token's K and V are stored per head as
uint8 codes with a float16 (scale, zero) pair, asymmetric: `x = (q - zero) * scale`; int4
packs two codes per byte, element 2i in the low nibble (the arithmetic of
`labkit.kernels.kv_quant`, so both backends store identical codes).

The torch backend reads and writes *rows*: seen as a 2-D table `[blocks * heads * block_size,
head_dim]`, the (slot, head) pair of a token is row `(block * heads + head) * block_size +
offset`. One `index_copy_` writes a step's K for all tokens and heads, one `index_select`
gathers a sequence's keys already laid out head by head, as attention wants them.

One extra block at the end, never handed out by the block manager, is scratch space that
padding rows (of a CUDA graph, of a ragged decode batch) write to and read from.

How many blocks fit: `bytes_per_block` (the KV formula of `labkit.quant.kv.kv_bytes_per_token`)
and `blocks_for_memory` (a fraction of the free memory, as LMDeploy sizes its cache).
The attention that reads and writes the cache is `labkit.engine.paged_attention`.
"""
from __future__ import annotations

import torch

from labkit.models.llama import LlamaConfig
from labkit.quant.kv import kv_bits, kv_bytes_per_token


CPU_CACHE_CAP_BYTES = 2 << 30  # a CPU's RAM is shared with everything else: cap the KV cache at 2 GiB


def bytes_per_block(config: LlamaConfig, block_size: int, dtype: torch.dtype, quant_policy: int = 0) -> int:
    """K + V of one block over all layers (codes and scale/zero pairs included)."""
    return block_size * kv_bytes_per_token(config, quant_policy, dtype.itemsize)


def blocks_for_memory(per_block: int, device: torch.device, fraction: float, at_most: int) -> int:
    """LMDeploy's --cache-max-entry-count: a fraction of the free memory, in blocks (at least 1,
    at most `at_most`, the blocks the engine's requests can use)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    else:
        free = min(_available_ram(), CPU_CACHE_CAP_BYTES / fraction)
    return max(1, min(int(free * fraction // per_block), at_most))


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


class PagedKVCache:
    def __init__(self, config: LlamaConfig, num_blocks: int, block_size: int, dtype: torch.dtype,
                 device: torch.device | str = "cpu", quant_policy: int = 0):
        self.bits = kv_bits(quant_policy)   # 16 (float), 8 or 4: the kernels' name for the policy
        if self.bits == 4 and config.head_dim % 2:
            raise ValueError("int4 KV needs an even head_dim")
        self.num_blocks, self.block_size, self.dtype, self.quant_policy = num_blocks, block_size, dtype, quant_policy
        self.num_kv_heads = config.num_key_value_heads
        self.scratch_block = num_blocks      # the extra block
        L, H, D = config.num_hidden_layers, config.num_key_value_heads, config.head_dim
        shape = (L, num_blocks + 1, H, block_size, D // 2 if self.bits == 4 else D)
        code_dtype = dtype if self.bits == 16 else torch.uint8
        self.k = torch.zeros(shape, dtype=code_dtype, device=device)
        self.v = torch.zeros(shape, dtype=code_dtype, device=device)
        self.k_scale_zero = self.v_scale_zero = None
        # fp16 caches have no scale/zero pairs; kernels still take an argument there (`scale_zero`)
        self.unused_scale_zero = tuple(torch.zeros(1, 1, 1, 2, dtype=torch.float16, device=device) for _ in range(2))
        if quant_policy:
            self.k_scale_zero = torch.zeros(shape[:-1] + (2,), dtype=torch.float16, device=device)
            self.v_scale_zero = torch.zeros(shape[:-1] + (2,), dtype=torch.float16, device=device)
        # the torch backend's 2-D row tables per layer, as views made once (not at every call)
        self.tables = [tuple(None if t is None else t[layer].view(-1, t.shape[-1])
                             for t in (self.k, self.k_scale_zero, self.v, self.v_scale_zero)) for layer in range(L)]

    def scale_zero(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's K and V (scale, zero) pairs as the kernels take them; a float cache passes
        placeholders (unused, but under the CUDA simulator an argument must not alias another)."""
        if self.k_scale_zero is None:
            return self.unused_scale_zero
        return self.k_scale_zero[layer], self.v_scale_zero[layer]

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in (self.k, self.v, self.k_scale_zero, self.v_scale_zero) if t is not None)

    # ------------------------------------------------------------------ rows (torch backend)
    def rows(self, slots: torch.Tensor) -> torch.Tensor:
        """Row of every (slot, head): slots [...] -> [..., heads]."""
        bs, H = self.block_size, self.num_kv_heads
        heads = torch.arange(H, device=slots.device)
        return ((slots // bs)[..., None] * H + heads) * bs + (slots % bs)[..., None]

    def write(self, layer: int, rows: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store new tokens' k/v [N, H_kv, D] at rows [N, H_kv] (from `rows(slot_mapping)`)."""
        rows = rows.reshape(-1)
        k_table, k_scale_zero, v_table, v_scale_zero = self.tables[layer]
        for table, scale_zero, x in ((k_table, k_scale_zero, k), (v_table, v_scale_zero, v)):
            x = x.reshape(rows.shape[0], -1)
            if self.quant_policy:
                from labkit.kernels.kv_quant import quantize_reference

                x, pairs = quantize_reference(x, self.bits)
                scale_zero.index_copy_(0, rows, pairs)
            table.index_copy_(0, rows, x.to(table.dtype))

    def read(self, layer: int, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V at rows [...] as [..., D] in the model's dtype (dequantized)."""
        flat, out = rows.reshape(-1), []
        k_table, k_scale_zero, v_table, v_scale_zero = self.tables[layer]
        for table, scale_zero in ((k_table, k_scale_zero), (v_table, v_scale_zero)):
            x = table.index_select(0, flat)
            if self.quant_policy:
                from labkit.kernels.kv_quant import dequantize_cache

                x = dequantize_cache(x, scale_zero.index_select(0, flat), self.bits, self.dtype)
            out.append(x.view(*rows.shape, -1))
        return out[0], out[1]
