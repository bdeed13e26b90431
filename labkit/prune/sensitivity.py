"""Where is a model fragile? Perplexity when one part alone is pruned.

Two scans, each pruning one part of the model and leaving everything else dense:

- by kind: one projection kind (all `q_proj`s, all `down_proj`s, ...) at a range of sparsities;
- by layer: every projection of one decoder layer at one sparsity.

A part whose perplexity climbs early deserves a lower sparsity (or no pruning); the flat ones
are where the savings are cheap. Weights are pruned in place and restored after each
measurement, so a scan costs one evaluation per cell and no copies of the model.

Scores are magnitude's or Wanda's, with Wanda's input norms taken once from the dense model's
calibration activations (a scan asks about one part at a time, so the sequential update of
`labkit.prune.oneshot` does not apply).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from labkit.eval import evaluate
from labkit.models.llama import Llama
from labkit.prune import masks
from labkit.prune.oneshot import PROJECTIONS, layer_linears
from labkit.quant.calib import LayerRunner


@torch.no_grad()
def input_norms_by_layer(model: Llama, calib: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """||X_j||_2 of every projection's inputs on the dense model, per layer."""
    runner, norms = LayerRunner(model, calib), []
    for layer in model.model.layers:
        inputs, out = runner.capture(layer)
        norms.append({name: masks.input_norms(inputs[name]) for name in PROJECTIONS})
        runner.advance(out)
    return norms


@contextmanager
def pruned(model: Llama, parts: list[tuple[int, str]], sparsity: float, norms=None):
    """`model` with the projections `parts` ((layer, kind) pairs) pruned, restored on exit."""
    saved = []
    try:
        with torch.no_grad():
            for i, kind in parts:
                w = layer_linears(model.model.layers[i])[kind].weight
                saved.append((w, w.clone()))
                if norms is None:
                    keep = masks.unstructured_mask(masks.magnitude_scores(w), sparsity, per_row=False)
                else:
                    keep = masks.unstructured_mask(masks.wanda_scores(w, norms[i][kind]), sparsity)
                w.mul_(keep)
        yield model
    finally:
        with torch.no_grad():
            for w, original in saved:
                w.copy_(original)


def scan_kinds(model: Llama, ids: list[int], sparsities=(0.3, 0.5, 0.7), kinds=PROJECTIONS, norms=None,
               max_tokens: int | None = 512, progress=None) -> list[dict]:
    """Perplexity with one projection kind pruned in every layer, for each kind and sparsity."""
    cells = [(k, s) for k in kinds for s in sparsities]
    rows = []
    for kind, s in (progress(cells) if progress else cells):
        with pruned(model, [(i, kind) for i in range(len(model.model.layers))], s, norms):
            rows.append({"kind": kind, "sparsity": s, "ppl": evaluate(model, ids, max_tokens=max_tokens).ppl})
    return rows


def scan_layers(model: Llama, ids: list[int], sparsity: float = 0.5, norms=None, max_tokens: int | None = 512,
                progress=None) -> list[dict]:
    """Perplexity with every projection of one layer pruned, for each layer."""
    layers = range(len(model.model.layers))
    rows = []
    for i in (progress(layers) if progress else layers):
        with pruned(model, [(i, kind) for kind in PROJECTIONS], sparsity, norms):
            rows.append({"layer": i, "sparsity": sparsity, "ppl": evaluate(model, ids, max_tokens=max_tokens).ppl})
    return rows


def plot_scans(kind_rows: list[dict], layer_rows: list[dict], dense_ppl: float, axes=None):
    """Two panels: perplexity against sparsity per kind, and per layer."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for kind in dict.fromkeys(r["kind"] for r in kind_rows):
        pts = [(r["sparsity"], r["ppl"]) for r in kind_rows if r["kind"] == kind]
        axes[0].plot(*zip(*pts), marker="o", label=kind)
    axes[0].axhline(dense_ppl, color="gray", ls="--", label="dense")
    axes[0].set(xlabel="sparsity of that kind, every layer", ylabel="perplexity", yscale="log",
                title="one projection kind pruned")
    axes[0].legend(fontsize=8)
    axes[1].bar([r["layer"] for r in layer_rows], [r["ppl"] - dense_ppl for r in layer_rows])
    axes[1].set(xlabel="layer", ylabel="perplexity increase",
                title=f"one layer pruned at {layer_rows[0]['sparsity']:.0%}" if layer_rows else "")
    return axes
