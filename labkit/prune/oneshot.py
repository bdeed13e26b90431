"""One-shot unstructured and N:M pruning of every linear layer, layer by layer.

The decoder layers are visited in order on calibration activations (`labkit.quant.calib`'s
`LayerRunner`, as AWQ uses it). For each layer: run it to capture the inputs of its linears,
prune them (magnitude, Wanda or SparseGPT; see `masks` and `sparsegpt`), then run the pruned
layer again to make the next layer's input. So every layer sees the activations of the
already-pruned layers before it, as in the Wanda and SparseGPT papers: the later layers can
partly adapt to the earlier ones' errors.

The embedding and `lm_head` stay dense (the papers do the same). The model is changed in
place; weights are dense tensors with exact zeros.
"""
from __future__ import annotations

import torch
from torch import nn

from labkit.models.llama import Llama
from labkit.prune import masks
from labkit.prune.sparsegpt import hessian, sparsegpt_prune
from labkit.quant.calib import LayerRunner

METHODS = ("magnitude", "wanda", "sparsegpt")
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def layer_linears(layer: nn.Module) -> dict[str, nn.Linear]:
    """The seven projections of a decoder layer by attribute name."""
    return {name: getattr(layer.self_attn if name in ("q_proj", "k_proj", "v_proj", "o_proj") else layer.mlp, name)
            for name in PROJECTIONS}


def check_settings(model: Llama, method: str, sparsity: float | None, pattern: str | None) -> tuple[int, int]:
    """(n, m) of the pattern (0, 0 when unstructured); a ValueError for anything impossible."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} (known: {', '.join(METHODS)})")
    if (sparsity is None) == (pattern is None):
        raise ValueError("give either a sparsity or an N:M pattern")
    if pattern is None:
        masks.check_sparsity(sparsity)
        return 0, 0
    n, m = masks.parse_pattern(pattern)
    widths = {model.config.hidden_size, model.config.intermediate_size,
              model.config.num_attention_heads * model.config.head_dim}
    if any(w % m for w in widths):
        raise ValueError(f"pattern {pattern}: M = {m} does not divide every linear's input dimension {sorted(widths)}")
    return n, m


@torch.no_grad()
def prune_weight(weight: torch.Tensor, x: torch.Tensor | None, method: str, sparsity: float | None,
                 n: int, m: int) -> torch.Tensor:
    """One linear's pruned weight, given its calibration inputs x [..., in] (unused by magnitude)."""
    if method == "sparsegpt":
        return sparsegpt_prune(weight, hessian(x), sparsity or 0.0, n, m)
    scores = masks.magnitude_scores(weight) if method == "magnitude" else \
        masks.wanda_scores(weight, masks.input_norms(x))
    keep = masks.nm_mask(scores, n, m) if m else masks.unstructured_mask(scores, sparsity, per_row=method == "wanda")
    return weight * keep


@torch.no_grad()
def prune_oneshot(model: Llama, ids: torch.Tensor | None, method: str, sparsity: float | None = None,
                  pattern: str | None = None, progress=None) -> dict:
    """Prune every projection of `model` in place; returns the per-layer sparsity report."""
    n, m = check_settings(model, method, sparsity, pattern)
    if method != "magnitude" and ids is None:
        raise ValueError(f"{method} needs calibration token ids")
    runner = LayerRunner(model, ids) if method != "magnitude" else None
    layers = list(enumerate(model.model.layers))
    report = []
    for i, layer in (progress(layers) if progress else layers):
        inputs = runner.capture(layer)[0] if runner else {}
        row = {}
        for name, linear in layer_linears(layer).items():
            linear.weight.copy_(prune_weight(linear.weight, inputs.get(name), method, sparsity, n, m))
            row[name] = round(masks.sparsity_of(linear.weight), 4)
        report.append(row)
        if runner:
            runner.advance(layer(runner.x, *runner.rope, None))
    return {"method": method, "sparsity": sparsity, "pattern": pattern,
            "linear_sparsity": round(linear_sparsity(model), 4), "layers": report}


def linear_sparsity(model: Llama) -> float:
    """The fraction of exact zeros over every decoder projection."""
    weights = [lin.weight for layer in model.model.layers for lin in layer_linears(layer).values()]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
