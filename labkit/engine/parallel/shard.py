"""Megatron-style tensor parallelism: which slice of every weight a rank keeps, and where the
ranks add up or gather their partial results.

Within a decoder layer (Shoeybi et al., Megatron-LM, 2019):

- q/k/v are split by heads and gate/up by MLP columns ("column-parallel"): every rank reads
  the whole hidden state and computes its own heads and its own MLP columns, with no
  communication, because attention works head by head and SwiGLU column by column.
- o and down are split by their input rows ("row-parallel"): each rank multiplies its heads'
  (its columns') part and gets a partial sum of the full output. One all-reduce adds the
  partial sums: one after attention, one after the MLP, per layer.
- With fewer KV heads than ranks, a KV head is copied to every rank whose query heads use it.

The vocabulary is split too: each rank holds a contiguous slice of the embedding rows (its
lookups are zero for the other tokens, an all-reduce fills them in) and the same slice of
the LM head (an all-gather puts the logits back together, so sampling is unchanged). The
vocabulary is padded to a multiple of the ranks with zero rows, whose logits are cut off.

Quantized layers split along the same lines as long as no quantization group straddles a
split: a row-parallel layer's input rows must fall in whole groups on every rank (each group
has its own scale), and int4 codes pack 8 output columns per word. `check_split` says so,
with the numbers, before any process starts.

The all-reduces are forward hooks on each layer's attention and MLP blocks rather than part
of the o/down layers: those layers are later fused or converted to other formats
(labkit.engine.fuse, labkit.engine.weights), and a hook on the block survives that.
"""
from __future__ import annotations

import time
from dataclasses import replace

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from labkit.models.llama import Llama, LlamaConfig
from labkit.quant import rtn
from labkit.quant.qlinear import QuantLinear


class Comm:
    """The collectives of one rank. With `timing` on it counts them: calls, the bytes of this
    rank's messages, and the seconds spent inside them, waiting for the other ranks included (a
    GPU then synchronizes around each call, so only eager steps are timed; a CUDA graph's
    replay runs no Python and counts nothing)."""

    def __init__(self, rank: int, world: int, group=None):
        self.rank, self.world, self.group = rank, world, group
        self.timing = False
        self.reset()

    def reset(self) -> None:
        self.seconds, self.calls, self.nbytes = 0.0, 0, 0

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        start = self._start(x)
        dist.all_reduce(x, group=self.group)
        self._stop(x, start)
        return x

    def all_gather(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank's x side by side along the last dimension."""
        start = self._start(x)
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x.contiguous(), group=self.group)
        out = torch.cat(parts, -1)
        self._stop(x, start)
        return out

    def _start(self, x: torch.Tensor) -> float:
        if self.timing and x.is_cuda:
            torch.cuda.synchronize(x.device)
        return time.perf_counter()

    def _stop(self, x: torch.Tensor, start: float) -> None:
        if self.timing:
            if x.is_cuda:
                torch.cuda.synchronize(x.device)
            self.seconds += time.perf_counter() - start
            self.calls += 1
            self.nbytes += x.numel() * x.element_size()


# ---------------------------------------------------------------------------- what splits how


def kv_heads_per_rank(n_kv: int, world: int) -> int:
    """KV heads each rank holds: its share, or one (a copy) when there are fewer than ranks."""
    return max(1, n_kv // world)


def shard_config(config: LlamaConfig, world: int, split_vocab: bool = False) -> LlamaConfig:
    """The shapes one of `world` ranks holds: its query heads, KV heads and MLP columns (and,
    with `split_vocab`, its slice of the vocabulary, padded: what it stores, not what it returns)."""
    return replace(config, num_attention_heads=config.num_attention_heads // world,
                   num_key_value_heads=kv_heads_per_rank(config.num_key_value_heads, world),
                   intermediate_size=config.intermediate_size // world,
                   vocab_size=-(-config.vocab_size // world) if split_vocab else config.vocab_size)


def check_split(config: LlamaConfig, world: int, group_size: int | None = None, int4: bool = False) -> None:
    """Raise ValueError (with the numbers) unless `world` ranks can split this model.

    `group_size`: the quantization group of the linear layers (None: full precision or one
    scale per output channel, which splits anywhere); `int4`: codes packed 8 columns a word.
    """
    H, H_kv, D, F_ = (config.num_attention_heads, config.num_key_value_heads, config.head_dim,
                      config.intermediate_size)
    if world < 1:
        raise ValueError(f"tp must be >= 1, got {world}")
    if H % world:
        raise ValueError(f"tp={world}: the {H} attention heads do not split evenly over {world} ranks")
    if H_kv % world and world % H_kv:
        raise ValueError(f"tp={world}: the {H_kv} KV heads neither split over {world} ranks nor "
                         f"divide them (for copies)")
    if F_ % world:
        raise ValueError(f"tp={world}: the MLP's {F_} columns do not split evenly over {world} ranks")
    rows = {"o_proj": H // world * D, "down_proj": F_ // world}   # each rank's input rows
    if group_size not in (None, rtn.PER_CHANNEL):
        for name, k in rows.items():
            if k % group_size:
                raise ValueError(f"tp={world}: {name} gets {k} input rows per rank, not whole groups of "
                                 f"{group_size} (a group may not straddle two ranks)")
    if int4:
        cols = {"q_proj": H // world * D, "k_proj": kv_heads_per_rank(H_kv, world) * D, "gate_proj": F_ // world}
        for name, n in cols.items():
            if n % 8:
                raise ValueError(f"tp={world}: {name} gets {n} output columns per rank; int4 packs them 8 a word")


# ---------------------------------------------------------------------------- slicing one layer


def slice_outputs(layer: nn.Module, index: torch.Tensor) -> nn.Module:
    """The layer restricted to output features `index` (column-parallel)."""
    if type(layer) is nn.Linear:
        out = nn.Linear(layer.in_features, len(index), bias=layer.bias is not None, dtype=layer.weight.dtype)
        out.weight.data = layer.weight.data[index].clone()
        if layer.bias is not None:
            out.bias.data = layer.bias.data[index].clone()
        return out.requires_grad_(False)
    if isinstance(layer, QuantLinear):
        q = _like(layer, layer.in_features, len(index))
        if layer.bits == 4:   # [K, N / 8] codes: whole words of 8 columns
            if index[0] % 8 or len(index) % 8:
                raise ValueError(f"int4 columns {int(index[0])}..{int(index[-1])} do not fall in whole words of 8")
            words = index[::8] // 8
            q.qweight, q.qzeros, q.scales = layer.qweight[:, words], layer.qzeros[:, words], layer.scales[:, index]
        else:                 # [N, K] codes, [N, K / g] scales
            q.qweight, q.scales = layer.qweight[index], layer.scales[index]
        if layer.bias is not None:
            q.bias = layer.bias[index]
        return q
    raise TypeError(f"cannot split a {type(layer).__name__} for tensor parallelism")


def slice_inputs(layer: nn.Module, start: int, stop: int, keep_bias: bool) -> nn.Module:
    """The layer restricted to input features [start, stop) (row-parallel); the bias, if any,
    stays on one rank only, so that the all-reduce adds it once."""
    if type(layer) is nn.Linear:
        out = nn.Linear(stop - start, layer.out_features, bias=layer.bias is not None, dtype=layer.weight.dtype)
        out.weight.data = layer.weight.data[:, start:stop].clone()
        if layer.bias is not None:
            out.bias.data = layer.bias.data.clone() if keep_bias else torch.zeros_like(layer.bias.data)
        return out.requires_grad_(False)
    if isinstance(layer, QuantLinear):
        if layer.act_bits == 8:
            raise ValueError("W8A8 layers quantize each token over the whole input: they cannot be split by rows")
        g = layer.group_size
        if not layer.per_channel and (start % g or stop % g or layer.padded_in != layer.in_features):
            raise ValueError(f"input rows {start}..{stop} of a layer quantized in groups of {g} "
                             f"(in_features {layer.in_features}) would split a group between ranks")
        q = _like(layer, stop - start, layer.out_features)
        groups = slice(0, 1) if layer.per_channel else slice(start // g, stop // g)
        if layer.bits == 4:   # [K, N / 8] codes, [K / g, N] scales and zeros
            q.qweight, q.qzeros, q.scales = layer.qweight[start:stop], layer.qzeros[groups], layer.scales[groups]
        else:
            q.qweight, q.scales = layer.qweight[:, start:stop], layer.scales[:, groups]
        if layer.bias is not None:
            q.bias = layer.bias.clone() if keep_bias else torch.zeros_like(layer.bias)
        return q
    raise TypeError(f"cannot split a {type(layer).__name__} for tensor parallelism")


def _like(layer: QuantLinear, in_features: int, out_features: int) -> QuantLinear:
    group = rtn.PER_CHANNEL if layer.per_channel else layer.group_size
    return QuantLinear(in_features, out_features, layer.bits, group, layer.bias is not None, layer.act_bits,
                       layer.backend)


# ---------------------------------------------------------------------------- the vocabulary


class VocabParallelEmbedding(nn.Embedding):
    """This rank's rows [start, start + rows) of the embedding; other tokens look up zeros,
    and the all-reduce over ranks fills them in."""

    def __init__(self, full: nn.Embedding, vocab: int, comm: Comm):
        rows = -(-vocab // comm.world)
        super().__init__(rows, full.embedding_dim, dtype=full.weight.dtype)
        self.start, self.comm = comm.rank * rows, comm
        part = full.weight.data[self.start:self.start + rows]
        self.weight.data = F.pad(part, (0, 0, 0, rows - part.shape[0])).clone()
        self.requires_grad_(False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        local = ids - self.start
        outside = (local < 0) | (local >= self.num_embeddings)
        x = F.embedding(local.masked_fill(outside, 0), self.weight)
        return self.comm.all_reduce(x.masked_fill(outside[..., None], 0))


class GatherLogits(nn.Module):
    """The LM head of this rank's vocabulary slice, followed by the all-gather of every rank's
    logits (the padding rows cut off): the full logits on every rank."""

    def __init__(self, head: nn.Module, vocab: int, comm: Comm):
        super().__init__()
        self.head, self.vocab, self.comm = head, vocab, comm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.comm.all_gather(self.head(x))[..., :self.vocab]


# ---------------------------------------------------------------------------- the whole model


def shard(model: Llama, comm: Comm) -> Llama:
    """Keep this rank's heads, MLP columns and vocabulary rows of `model` (in place; returns
    it), with the all-reduces installed. `model.config` becomes the shard's (its heads, KV
    heads and MLP width: what the KV cache is sized by); the vocabulary size stays the full one,
    since the logits are gathered (`gather_logits`, once the LM head's format is final)."""
    cfg, r, w = model.config, comm.rank, comm.world
    check_split(cfg, w)
    H, H_kv, D, F_ = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.intermediate_size
    h, h_kv, f = H // w, kv_heads_per_rank(H_kv, w), F_ // w
    first_kv = r * h // (H // H_kv)    # the KV head of this rank's first query head
    q_rows = torch.arange(r * h * D, (r + 1) * h * D)
    kv_rows = torch.arange(first_kv * D, (first_kv + h_kv) * D)
    mlp_rows = torch.arange(r * f, (r + 1) * f)
    reduce_output = lambda module, args, out: comm.all_reduce(out)   # noqa: E731
    for layer in model.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        if attn.qkv_proj is not None or mlp.gate_up_proj is not None:
            raise ValueError("shard the model before its projections are fused (labkit.engine.fuse)")
        attn.q_proj = slice_outputs(attn.q_proj, q_rows)
        attn.k_proj, attn.v_proj = slice_outputs(attn.k_proj, kv_rows), slice_outputs(attn.v_proj, kv_rows)
        attn.o_proj = slice_inputs(attn.o_proj, r * h * D, (r + 1) * h * D, keep_bias=r == 0)
        attn.n_heads, attn.n_kv = h, h_kv
        mlp.gate_proj, mlp.up_proj = slice_outputs(mlp.gate_proj, mlp_rows), slice_outputs(mlp.up_proj, mlp_rows)
        mlp.down_proj = slice_inputs(mlp.down_proj, r * f, (r + 1) * f, keep_bias=r == 0)
        attn.register_forward_hook(reduce_output)   # the sum of every rank's heads
        mlp.register_forward_hook(reduce_output)    # the sum of every rank's MLP columns
    embed = VocabParallelEmbedding(model.model.embed_tokens, cfg.vocab_size, comm)
    if cfg.tie_word_embeddings:
        model.lm_head = nn.Linear(cfg.hidden_size, embed.num_embeddings, bias=False, dtype=embed.weight.dtype)
        model.lm_head.weight = embed.weight
    else:
        # rows past the vocabulary (the last rank's padding) repeat the last row: their logits are cut off
        rows = torch.arange(embed.start, embed.start + embed.num_embeddings).clamp(max=cfg.vocab_size - 1)
        model.lm_head = slice_outputs(model.lm_head, rows)
    model.model.embed_tokens = embed
    model.config = shard_config(cfg, w)
    return model


def gather_logits(model: Llama, vocab: int, comm: Comm) -> None:
    """Wrap the (final) LM head so that it returns the full vocabulary's logits."""
    model.lm_head = GatherLogits(model.lm_head, vocab, comm)
