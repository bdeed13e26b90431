"""AWQ: activation-aware weight quantization (Lin et al., 2023), as AutoAWQ does it.

Not all weights matter equally: an input channel that carries large activations multiplies
its weights' rounding errors by those activations. AWQ protects such channels without
keeping any weight in higher precision. Scale the channel up by `s` before rounding (its
weights then use more of the int4 grid, so their relative error shrinks) and divide the
activation by `s` (folded into the operator before, so it is free at run time):

    y = x W^T = (x / s) (W * s)^T  ->  quantize W * s instead of W

Which `s`? The activations' per-channel mean magnitude `a` raised to a power:
`s = a^alpha`, normalized so that `sqrt(max(s) min(s)) = 1`. `alpha = 0` is plain RTN,
`alpha = 1` protects outliers hardest (and crushes everything else). For each layer group
(see `labkit.quant.calib`) the best `alpha` on a grid of 20 values is the one whose
quantized block output is closest (MSE) to the full-precision output on calibration text.

Then an optional clipping search: for each output row and group, try shrinking the
quantization range to `r * max|w|` (r from 1 down to 0.5); clipping a few outliers can buy
a finer grid for all the others. Finally RTN (asymmetric int4, group 128) of the scaled and
clipped weights, stored as `QuantLinear` in the AutoAWQ gemm layout.

The layers are processed one at a time on the calibration activations of the
full-precision model (the next layer's input is computed before this layer is quantized),
as AutoAWQ does.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from labkit.quant.calib import LayerRunner, ScaleGroup, calibration_ids, check_architecture, scale_groups
from labkit.quant.qlinear import QuantLinear, check_model, simulate

CLIPPED = ("v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Clipping skips q_proj and k_proj: their errors pass through the softmax of attention
scores, where a clipped outlier hurts more than the output MSE of one layer shows (AutoAWQ)."""


@dataclass
class AwqReport:
    """What the search chose: per layer, the alpha of each group and its loss curve."""

    alphas: list[dict[str, float]] = field(default_factory=list)
    losses: list[dict[str, list[float]]] = field(default_factory=list)


def awq_scales(act_mean: torch.Tensor, alpha: float) -> torch.Tensor:
    """s = a^alpha per channel, normalized so that sqrt(max(s) * min(s)) = 1."""
    s = act_mean.float().clamp(min=1e-4).pow(alpha)
    return s / (s.max() * s.min()).sqrt()


@torch.no_grad()
def search_scale(group: ScaleGroup, x: torch.Tensor, bits: int = 4, group_size: int = 128,
                 n_grid: int = 20, search_samples: int | None = None) -> tuple[torch.Tensor, float, list[float]]:
    """(best scales per producer channel, best alpha, loss per grid point) for one group.

    `x` is the consumers' input [batch, tokens, C]: the mean magnitudes come from all of it,
    the losses from its first `search_samples` sequences (all if None). Weights are left
    as they were.
    """
    act_mean = group.reduce(x.abs().reshape(-1, x.shape[-1]).float().mean(0))
    x = x[:search_samples]
    reference = group.inspect(x)
    originals = [lin.weight.detach().clone() for lin in group.consumers]
    losses, best = [], (float("inf"), 0.0, torch.ones_like(act_mean))
    try:
        for i in range(n_grid):
            alpha = i / n_grid
            s = awq_scales(act_mean, alpha)
            wide = group.expand(s).to(originals[0].dtype)
            for lin, w in zip(group.consumers, originals):
                lin.weight.copy_(simulate(w * wide, bits, group_size) / wide)
            loss = (group.inspect(x) - reference).float().pow(2).mean().item()
            losses.append(loss)
            if loss < best[0]:
                best = (loss, alpha, s)
    finally:
        for lin, w in zip(group.consumers, originals):
            lin.weight.copy_(w)
    return best[2], best[1], losses


@torch.no_grad()
def search_clip(w: torch.Tensor, x: torch.Tensor, bits: int = 4, group_size: int = 128, n_grid: int = 20,
                max_shrink: float = 0.5, n_tokens: int = 512) -> torch.Tensor:
    """Per (output row, group) clipping threshold [N, groups] minimizing the group's output MSE.

    The error of each group is separable (x_j . w_j summed over groups), so every group keeps
    its own best ratio; one batched matmul per grid point computes all of them.
    """
    n, k = w.shape
    g = k if group_size == -1 else group_size
    pad = -k % g
    x = x.reshape(-1, k)
    x = x[:: max(1, x.shape[0] // n_tokens)][:n_tokens].float()
    xg = nn.functional.pad(x, (0, pad)).view(x.shape[0], -1, g).transpose(0, 1)     # [G, t, g]
    wg = nn.functional.pad(w.float(), (0, pad)).view(n, -1, g)                      # [N, G, g]
    reference = torch.bmm(xg, wg.permute(1, 2, 0))                                   # [G, t, N]
    full = wg.abs().amax(-1)                                                         # [N, G]
    best_err = torch.full_like(full, float("inf"))
    best = full.clone()
    for i in range(int(max_shrink * n_grid)):
        limit = full * (1 - i / n_grid)
        clipped = torch.maximum(torch.minimum(wg, limit[..., None]), -limit[..., None])
        q = simulate(clipped.reshape(n, -1), bits, g).view(n, -1, g)
        err = (torch.bmm(xg, q.permute(1, 2, 0)) - reference).pow(2).mean(1).t()   # [N, G]
        better = err < best_err
        best_err[better], best[better] = err[better], limit[better]
    return best


@torch.no_grad()
def apply_clip(linear: nn.Linear, limit: torch.Tensor, group_size: int) -> None:
    """Clamp each (row, group) of the weight to [-limit, limit]."""
    n, k = linear.weight.shape
    g = k if group_size == -1 else group_size
    wide = limit.repeat_interleave(g, dim=1)[:, :k].to(linear.weight.dtype)
    linear.weight.copy_(torch.maximum(torch.minimum(linear.weight, wide), -wide))


def awq_quantize(model: nn.Module, tokenizer, text: str | None = None, bits: int = 4, group_size: int = 128,
                 n_grid: int = 20, clip: bool = True, n_samples: int = 4, seqlen: int = 512,
                 search_samples: int = 1, progress=None) -> AwqReport:
    """Quantize `model` in place with AWQ: every decoder linear becomes a `QuantLinear`.

    `text` is the calibration text (labkit's own by default); `n_samples` windows of
    `seqlen` tokens are taken from it. Activation statistics use all of them; each grid
    point of the scale search runs its block on the first `search_samples` windows only
    (the search is 20 forward passes per group, the bulk of the time on a CPU; the
    statistics are cheap). `progress` wraps the layer loop (e.g. tqdm).
    """
    check_architecture(model)
    config = model.config
    check_model(config, bits, group_size)   # fail before any work
    runner = LayerRunner(model, calibration_ids(tokenizer, text, n_samples, seqlen))
    report = AwqReport()
    layers = list(enumerate(model.model.layers))
    for i, layer in (progress(layers) if progress else layers):
        inputs, output = runner.capture(layer)
        groups = scale_groups(layer, config, runner.rope)
        found = [(grp, *search_scale(grp, inputs[grp.names[0]], bits, group_size, n_grid, search_samples))
                 for grp in groups]
        for grp, s, _, _ in found:
            grp.fold(s)
            for name in grp.names:
                inputs[name] = inputs[name] / grp.expand(s).to(inputs[name].dtype)
        report.alphas.append({grp.name: alpha for grp, _, alpha, _ in found})
        report.losses.append({grp.name: losses for grp, _, _, losses in found})
        for parent in (layer.self_attn, layer.mlp):
            for name, linear in list(parent.named_children()):
                if not isinstance(linear, nn.Linear):
                    continue
                if clip and name in CLIPPED:
                    apply_clip(linear, search_clip(linear.weight, inputs[name], bits, group_size), group_size)
                setattr(parent, name, QuantLinear.from_linear(linear, bits, group_size))
        runner.advance(output)
    return report
