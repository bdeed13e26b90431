"""Depth pruning: remove whole decoder blocks, giving a model with fewer layers.

A pre-norm block adds its output to the residual stream: `x_out = x_in + f(x_in)`. Where
`f` is small next to `x_in`, the block barely turns the hidden state, and removing it
changes little. Block influence (ShortGPT, Men et al. 2024; Minitron, Muralidharan et al.
2024) measures that turn on calibration text:

    BI_i = 1 - mean over tokens of cos(x_in, x_out)      (0: the block changes nothing)

and the blocks of lowest influence go. The alternative ranking (`rank="ppl"`) drops each
block alone and measures the perplexity on the calibration text: slower (one forward pass
per block) and blind to how removals interact, but it asks the question directly.

The result is an ordinary Llama with fewer layers: the same config with a smaller
`num_hidden_layers`, loadable anywhere.
"""
from __future__ import annotations

import copy
from dataclasses import replace

import torch
import torch.nn.functional as F

from labkit.models.llama import Llama
from labkit.quant.calib import LayerRunner

RANKS = ("influence", "ppl")


def cosine_influence(x_in: torch.Tensor, x_out: torch.Tensor) -> float:
    """1 - the mean cosine similarity of matching rows (tokens) of two [..., hidden] tensors."""
    cos = F.cosine_similarity(x_in.flatten(0, -2).double(), x_out.flatten(0, -2).double(), dim=-1)
    return float(1 - cos.mean())


@torch.no_grad()
def block_influence(model: Llama, ids: torch.Tensor) -> torch.Tensor:
    """Block influence of every decoder layer on calibration token ids [batch, tokens] -> [layers]."""
    runner = LayerRunner(model, ids)
    scores = []
    for layer in model.model.layers:
        out = layer(runner.x, *runner.rope, None)
        scores.append(cosine_influence(runner.x, out))
        runner.advance(out)
    return torch.tensor(scores)


@torch.no_grad()
def nll_without(model: Llama, ids: torch.Tensor, skip: set[int] = frozenset()) -> float:
    """Mean next-token negative log-likelihood of ids [batch, tokens] with the layers in `skip` left out."""
    runner = LayerRunner(model, ids)
    for i, layer in enumerate(model.model.layers):
        if i not in skip:
            runner.advance(layer(runner.x, *runner.rope, None))
    logits = model.lm_head(model.model.norm(runner.x)).float()
    return float(F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten().to(logits.device)))


def ppl_increase(model: Llama, ids: torch.Tensor, progress=None) -> torch.Tensor:
    """Per layer, the calibration perplexity with that layer alone removed minus the full model's."""
    base = nll_without(model, ids)
    layers = range(len(model.model.layers))
    return torch.tensor([nll_without(model, ids, {i}) for i in (progress(layers) if progress else layers)]).exp() \
        - torch.tensor(base).exp()


def layers_to_drop(scores: torch.Tensor, n: int) -> list[int]:
    """The `n` layers of lowest score (ties: the later layer goes first), in increasing order."""
    order = sorted(range(len(scores)), key=lambda i: (float(scores[i]), -i))
    return sorted(order[:n])


def drop_layers(model: Llama, drop: list[int]) -> Llama:
    """A copy of `model` without the decoder layers in `drop` (the rest renumbered from 0)."""
    n = len(model.model.layers)
    if not drop or len(set(drop)) >= n or any(not 0 <= i < n for i in drop):
        raise ValueError(f"cannot remove layers {sorted(drop)} of a model with {n} layers "
                         "(remove at least one, keep at least one)")
    pruned = copy.deepcopy(model)
    kept = [layer for i, layer in enumerate(pruned.model.layers) if i not in set(drop)]
    for i, layer in enumerate(kept):
        layer.self_attn.layer = i  # caches index their buffers by this number
    pruned.model.layers = torch.nn.ModuleList(kept)
    pruned.config = replace(model.config, num_hidden_layers=len(kept))
    return pruned


def layers_for_ratio(n_layers: int, ratio: float) -> int:
    """How many of `n_layers` a ratio removes (rounded); a ValueError when none or all."""
    n = round(ratio * n_layers)
    if not 0 < n < n_layers:
        raise ValueError(f"--ratio {ratio} removes {n} of {n_layers} layers: choose a ratio that removes "
                         f"between 1 and {n_layers - 1}")
    return n


def prune_depth(model: Llama, ids: torch.Tensor, ratio: float, rank: str = "influence",
                progress=None) -> tuple[Llama, dict]:
    """(the model without the `ratio` least important layers, a report of scores and removed layers)."""
    if rank not in RANKS:
        raise ValueError(f"unknown ranking {rank!r} (known: {', '.join(RANKS)})")
    n = layers_for_ratio(len(model.model.layers), ratio)
    scores = block_influence(model, ids) if rank == "influence" else ppl_increase(model, ids, progress)
    drop = layers_to_drop(scores, n)
    report = {"method": "layers", "ratio": ratio, "rank": rank, "removed_layers": drop,
              "scores": [round(float(s), 6) for s in scores]}
    return drop_layers(model, drop), report
