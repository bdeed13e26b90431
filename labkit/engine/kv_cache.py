"""The paged KV cache's memory: K and V blocks for every layer, optionally quantized.

Layout (docs/internals.md): per layer, `k`/`v` are `[num_blocks, num_kv_heads, block_size,
head_dim]`; token slot `s` lives in block `s // block_size` at offset `s % block_size`.
With `quant_policy` 8 or 4 (LMDeploy's names) each token's K and V are stored per head as
uint8 codes with a float16 (scale, zero) pair, asymmetric: `x = (q - zero) * scale`; int4
packs two codes per byte, element 2i in the low nibble (the arithmetic of
`labkit.kernels.kv_quant`, so both backends store identical codes).

The torch backend reads and writes *rows*: seen as a 2-D table `[blocks * heads * block_size,
head_dim]`, the (slot, head) pair of a token is row `(block * heads + head) * block_size +
offset`. One `index_copy_` writes a step's K for all tokens and heads, one `index_select`
gathers a sequence's keys already laid out head by head, as attention wants them.

One extra block at the end, never handed out by the block manager, is scratch space that
padding rows (of a CUDA graph, of a ragged decode batch) write to and read from.
"""
from __future__ import annotations

import torch

from labkit.models.llama import LlamaConfig


def bytes_per_block(config: LlamaConfig, block_size: int, dtype: torch.dtype, quant_policy: int = 0) -> int:
    """K + V of one block over all layers (codes and scale/zero pairs included)."""
    per_token_head = {0: config.head_dim * torch.finfo(dtype).bits // 8,
                      8: config.head_dim + 4, 4: config.head_dim // 2 + 4}[quant_policy]
    return 2 * config.num_hidden_layers * config.num_key_value_heads * block_size * per_token_head


class PagedKVCache:
    def __init__(self, config: LlamaConfig, num_blocks: int, block_size: int, dtype: torch.dtype,
                 device: torch.device | str = "cpu", quant_policy: int = 0):
        if quant_policy not in (0, 4, 8):
            raise ValueError(f"quant_policy must be 0 (none), 8 (int8) or 4 (int4), got {quant_policy}")
        if quant_policy == 4 and config.head_dim % 2:
            raise ValueError("int4 KV needs an even head_dim")
        self.num_blocks, self.block_size, self.dtype, self.quant_policy = num_blocks, block_size, dtype, quant_policy
        self.num_kv_heads = config.num_key_value_heads
        self.scratch_block = num_blocks      # the extra block
        L, H, D = config.num_hidden_layers, config.num_key_value_heads, config.head_dim
        shape = (L, num_blocks + 1, H, block_size, D // 2 if quant_policy == 4 else D)
        code_dtype = dtype if quant_policy == 0 else torch.uint8
        self.k = torch.zeros(shape, dtype=code_dtype, device=device)
        self.v = torch.zeros(shape, dtype=code_dtype, device=device)
        self.k_sz = self.v_sz = None
        # fp16 caches have no scale/zero pairs; kernels still take an argument there (unused)
        self.unused_sz = tuple(torch.zeros(1, 1, 1, 2, dtype=torch.float16, device=device) for _ in range(2))
        if quant_policy:
            self.k_sz = torch.zeros(shape[:-1] + (2,), dtype=torch.float16, device=device)
            self.v_sz = torch.zeros(shape[:-1] + (2,), dtype=torch.float16, device=device)
        # the torch backend's 2-D row tables per layer, as views made once (not at every call)
        self.tables = [tuple(None if t is None else t[layer].view(-1, t.shape[-1])
                             for t in (self.k, self.k_sz, self.v, self.v_sz)) for layer in range(L)]

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in (self.k, self.v, self.k_sz, self.v_sz) if t is not None)

    # ------------------------------------------------------------------ rows (torch backend)
    def rows(self, slots: torch.Tensor) -> torch.Tensor:
        """Row of every (slot, head): slots [...] -> [..., heads]."""
        bs, H = self.block_size, self.num_kv_heads
        heads = torch.arange(H, device=slots.device)
        return ((slots // bs)[..., None] * H + heads) * bs + (slots % bs)[..., None]

    def write(self, layer: int, rows: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store new tokens' k/v [N, H_kv, D] at rows [N, H_kv] (from `rows(slot_mapping)`)."""
        rows = rows.reshape(-1)
        k_table, k_sz, v_table, v_sz = self.tables[layer]
        for table, sz, x in ((k_table, k_sz, k), (v_table, v_sz, v)):
            x = x.reshape(rows.shape[0], -1)
            if self.quant_policy:
                from labkit.kernels.kv_quant import quantize_reference

                x, scale_zero = quantize_reference(x, self.quant_policy)
                sz.index_copy_(0, rows, scale_zero)
            table.index_copy_(0, rows, x.to(table.dtype))

    def read(self, layer: int, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V at rows [...] as [..., D] in the model's dtype (dequantized)."""
        flat, out = rows.reshape(-1), []
        k_table, k_sz, v_table, v_sz = self.tables[layer]
        for table, sz in ((k_table, k_sz), (v_table, v_sz)):
            x = table.index_select(0, flat)
            if self.quant_policy:
                from labkit.kernels.kv_quant import dequantize_cache

                x = dequantize_cache(x, sz.index_select(0, flat), self.quant_policy, self.dtype)
            out.append(x.view(*rows.shape, -1))
        return out[0], out[1]
