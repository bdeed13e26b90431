"""Width pruning: fewer MLP channels, attention heads or embedding channels in every layer.

Importance comes from activations on calibration text (Minitron, Muralidharan et al. 2024),
each an L2 norm over the calibration tokens:

- an MLP channel: its activation `silu(gate) * up`, the input of `down_proj`;
- an attention head: its attention output, the head's slice of the input of `o_proj`;
- an embedding channel: the outputs of the RMSNorms before attention and MLP, summed over
  layers (every layer reads the residual stream through them).

Removing an MLP channel deletes a row of `gate_proj` and `up_proj` and a column of
`down_proj`; a head deletes its rows of `q_proj` and its columns of `o_proj`. Grouped-query
attention ties query heads to a shared key/value head (query head h reads KV head
`h // (H / H_kv)`), so heads go in a way that keeps the grouping regular: keep the `kv_heads`
most important KV groups (by the summed importance of their query heads; their `k_proj` and
`v_proj` rows stay), and in each the same number `heads / kv_heads` of its most important
query heads. Every layer keeps the same widths, so the result is an ordinary config with a
smaller `intermediate_size`, `num_attention_heads`, `num_key_value_heads` or `hidden_size`
(`head_dim` is kept, and written out, since it no longer follows from hidden / heads).

Removing embedding channels also changes what each RMSNorm divides by (the RMS over the
channels left): unlike the other two, not an exact removal of a contribution. Minitron
accepts that and recovers with distillation.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch
from torch import nn

from labkit.models.llama import Llama
from labkit.prune.masks import input_norms
from labkit.quant.calib import LayerRunner


@dataclass
class Importance:
    mlp: torch.Tensor     # [layers, intermediate]
    heads: torch.Tensor   # [layers, heads]
    hidden: torch.Tensor  # [hidden]


@torch.no_grad()
def importance(model: Llama, ids: torch.Tensor) -> Importance:
    """Activation importance of every MLP channel, head and embedding channel on ids [batch, tokens]."""
    runner, D = LayerRunner(model, ids), model.config.head_dim
    mlp, heads, hidden = [], [], torch.zeros(model.config.hidden_size)
    for layer in model.model.layers:
        inputs, out = runner.capture(layer)
        mlp.append(input_norms(inputs["down_proj"]))
        attn = inputs["o_proj"].reshape(-1, model.config.num_attention_heads, D).float()
        heads.append(attn.pow(2).sum((0, 2)).sqrt())
        hidden += (input_norms(inputs["q_proj"]) + input_norms(inputs["gate_proj"])).cpu()
        runner.advance(out)
    return Importance(torch.stack(mlp).cpu(), torch.stack(heads).cpu(), hidden)


def top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k highest scores, in increasing index order (ties: the earlier index stays)."""
    order = torch.sort(-scores, stable=True).indices[:k]
    return order.sort().values


def choose_heads(scores: torch.Tensor, n_kv: int, heads: int, kv_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(query heads kept, KV heads kept) for one layer's head scores [H] grouped into n_kv groups."""
    per_group = scores.reshape(n_kv, -1)
    groups = top(per_group.sum(1), kv_heads)
    q = [g * per_group.shape[1] + top(per_group[g], heads // kv_heads) for g in groups.tolist()]
    return torch.cat(q), groups


def _rows(linear: nn.Linear, idx: torch.Tensor) -> None:
    linear.weight = nn.Parameter(linear.weight.detach()[idx].clone())
    linear.out_features = len(idx)
    if linear.bias is not None:
        linear.bias = nn.Parameter(linear.bias.detach()[idx].clone())


def _columns(linear: nn.Linear, idx: torch.Tensor) -> None:
    linear.weight = nn.Parameter(linear.weight.detach()[:, idx].clone())
    linear.in_features = len(idx)


def _head_channels(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    return (heads[:, None] * head_dim + torch.arange(head_dim)).reshape(-1)


def check_widths(config, mlp: int | None, heads: int | None, kv_heads: int | None, hidden: int | None) -> None:
    """A ValueError for widths the model cannot take (zero, more than it has, an irregular grouping)."""
    H, H_kv = config.num_attention_heads, config.num_key_value_heads
    for name, value, most in (("mlp", mlp, config.intermediate_size), ("heads", heads, H),
                              ("kv-heads", kv_heads, H_kv), ("hidden", hidden, config.hidden_size)):
        if value is not None and not 1 <= value <= most:
            raise ValueError(f"--{name} {value}: the model has {most}; keep between 1 and {most}")
    heads, kv_heads = heads or H, kv_heads or H_kv
    if heads % kv_heads or heads // kv_heads > H // H_kv:
        raise ValueError(f"--heads {heads} with --kv-heads {kv_heads}: each kept KV group needs the same number of "
                         f"query heads, at most the {H // H_kv} it has (the model has {H} heads in {H_kv} groups)")


@torch.no_grad()
def prune_width(model: Llama, ids: torch.Tensor, mlp: int | None = None, heads: int | None = None,
                kv_heads: int | None = None, hidden: int | None = None) -> tuple[Llama, dict]:
    """(a narrower copy of `model`, a report): `mlp` channels, `heads` query heads in `kv_heads`
    KV groups and `hidden` embedding channels kept in every layer (None: unchanged)."""
    config = model.config
    check_widths(config, mlp, heads, kv_heads, hidden)
    if all(v is None for v in (mlp, heads, kv_heads, hidden)):
        raise ValueError("give at least one of --mlp, --heads, --kv-heads, --hidden")
    heads, kv_heads = heads or config.num_attention_heads, kv_heads or config.num_key_value_heads
    scores = importance(model, ids)
    pruned, D = copy.deepcopy(model), config.head_dim
    for i, layer in enumerate(pruned.model.layers):
        attn, ff = layer.self_attn, layer.mlp
        if mlp is not None:
            keep = top(scores.mlp[i], mlp)
            for linear in (ff.gate_proj, ff.up_proj):
                _rows(linear, keep)
            _columns(ff.down_proj, keep)
        q, kv = choose_heads(scores.heads[i], config.num_key_value_heads, heads, kv_heads)
        _rows(attn.q_proj, _head_channels(q, D))
        _columns(attn.o_proj, _head_channels(q, D))
        for linear in (attn.k_proj, attn.v_proj):
            _rows(linear, _head_channels(kv, D))
        attn.n_heads, attn.n_kv = heads, kv_heads
    if hidden is not None:
        keep_hidden(pruned, top(scores.hidden, hidden))
    pruned.config = replace(config, intermediate_size=mlp or config.intermediate_size, num_attention_heads=heads,
                            num_key_value_heads=kv_heads, hidden_size=hidden or config.hidden_size)
    report = {"method": "width", "mlp": mlp, "heads": heads, "kv_heads": kv_heads, "hidden": hidden}
    return pruned, report


def keep_hidden(model: Llama, keep: torch.Tensor) -> None:
    """Keep only embedding channels `keep` everywhere the residual stream is read or written."""
    body = model.model
    body.embed_tokens.weight = nn.Parameter(body.embed_tokens.weight.detach()[:, keep].clone())
    body.embed_tokens.embedding_dim = len(keep)
    norms = [body.norm] + [n for layer in body.layers for n in (layer.input_layernorm, layer.post_attention_layernorm)]
    for norm in norms:
        norm.weight = nn.Parameter(norm.weight.detach()[keep].clone())
    for layer in body.layers:
        for linear in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj,
                       layer.mlp.gate_proj, layer.mlp.up_proj):
            _columns(linear, keep)
        for linear in (layer.self_attn.o_proj, layer.mlp.down_proj):
            _rows(linear, keep)
    if model.config.tie_word_embeddings:
        model.lm_head.weight = body.embed_tokens.weight
    else:
        _columns(model.lm_head, keep)
    model.lm_head.in_features = len(keep)
