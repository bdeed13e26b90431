"""The paged KV cache's memory: K and V blocks for every layer, optionally quantized.

Layout (docs/internals.md): per layer, `k`/`v` are `[num_blocks, num_kv_heads, block_size,
head_dim]`; token slot `s` lives in block `s // block_size` at offset `s % block_size`.
With `quant_policy` 8 or 4 (LMDeploy's names) each token's K and V are stored per head as
uint8 codes with a float16 (scale, zero) pair, asymmetric: `x = (q - zero) * scale`; int4
packs two codes per byte, element 2i in the low nibble. One extra block at the end, never
handed out by the block manager, is scratch space that padding rows of a CUDA graph write to.
"""
from __future__ import annotations

import torch

from labkit.models.llama import LlamaConfig


def quantize_kv(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[..., D] float -> (uint8 codes [..., D or D/2], float16 [..., 2] (scale, zero))."""
    qmax = 2 ** bits - 1
    lo, hi = x.float().aminmax(dim=-1, keepdim=True)
    scale = ((hi - lo) / qmax).clamp(min=1e-6).half()
    zero = (-lo / scale.float()).half()
    q = (x.float() / scale.float() + zero.float()).round().clamp(0, qmax).to(torch.uint8)
    if bits == 4:
        q = q[..., 0::2] | (q[..., 1::2] << 4)
    return q, torch.cat([scale, zero], dim=-1)


def dequantize_kv(q: torch.Tensor, sz: torch.Tensor, bits: int, dtype: torch.dtype) -> torch.Tensor:
    if bits == 4:
        q = torch.stack([q & 0xF, q >> 4], dim=-1).flatten(-2)
    return ((q.float() - sz[..., 1:].float()) * sz[..., :1].float()).to(dtype)


def bytes_per_block(config: LlamaConfig, block_size: int, dtype: torch.dtype, quant_policy: int = 0) -> int:
    """K + V of one block over all layers."""
    per_token_head = {0: config.head_dim * torch.finfo(dtype).bits // 8,
                      8: config.head_dim + 4, 4: config.head_dim // 2 + 4}[quant_policy]
    return 2 * config.num_hidden_layers * config.num_key_value_heads * block_size * per_token_head


class PagedKVCache:
    def __init__(self, config: LlamaConfig, num_blocks: int, block_size: int, dtype: torch.dtype,
                 device: torch.device | str = "cpu", quant_policy: int = 0):
        if quant_policy not in (0, 4, 8):
            raise ValueError(f"quant_policy must be 0, 4 or 8, got {quant_policy}")
        if quant_policy == 4 and config.head_dim % 2:
            raise ValueError("int4 KV needs an even head_dim")
        self.num_blocks, self.block_size, self.dtype, self.quant_policy = num_blocks, block_size, dtype, quant_policy
        self.scratch_block = num_blocks      # the extra block
        L, H, D = config.num_hidden_layers, config.num_key_value_heads, config.head_dim
        shape = (L, num_blocks + 1, H, block_size, D if quant_policy != 4 else D // 2)
        code_dtype = dtype if quant_policy == 0 else torch.uint8
        self.k = torch.zeros(shape, dtype=code_dtype, device=device)
        self.v = torch.zeros(shape, dtype=code_dtype, device=device)
        if quant_policy:
            self.k_sz = torch.zeros(shape[:-1] + (2,), dtype=torch.float16, device=device)
            self.v_sz = torch.zeros(shape[:-1] + (2,), dtype=torch.float16, device=device)

    @property
    def nbytes(self) -> int:
        extra = self.k_sz.nbytes + self.v_sz.nbytes if self.quant_policy else 0
        return self.k.nbytes + self.v.nbytes + extra

    def write(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store new tokens' k/v [N, H_kv, D] at slots [N] (int64)."""
        blocks, offsets = slots // self.block_size, slots % self.block_size
        if self.quant_policy:
            for cache, sz, x in ((self.k, self.k_sz, k), (self.v, self.v_sz, v)):
                q, s = quantize_kv(x, self.quant_policy)
                cache[layer, blocks, :, offsets] = q
                sz[layer, blocks, :, offsets] = s
        else:
            self.k[layer, blocks, :, offsets] = k.to(self.dtype)
            self.v[layer, blocks, :, offsets] = v.to(self.dtype)

    def gather(self, layer: int, block_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V of the given blocks (any index shape [...]) as [..., H_kv, n*block_size... ] views:
        returns [..., H_kv, block_size, D] per block, dequantized."""
        if not self.quant_policy:
            return self.k[layer, block_ids], self.v[layer, block_ids]
        bits = self.quant_policy
        return (dequantize_kv(self.k[layer, block_ids], self.k_sz[layer, block_ids], bits, self.dtype),
                dequantize_kv(self.v[layer, block_ids], self.v_sz[layer, block_ids], bits, self.dtype))
