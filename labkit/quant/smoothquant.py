"""SmoothQuant W8A8 (Xiao et al., 2023): make activations easy to quantize by moving their
outliers into the weights.

W8A8 quantizes both operands of every matmul to int8 so the product runs on integer units.
Weights are easy (per output channel, few outliers). Activations are not: a handful of
input channels carry values 10-100x larger than the rest, in every token, so a per-token
int8 scale set by the outlier rounds every ordinary channel to a few levels. That is the
naive W8A8 failure.

Outliers live in fixed channels, so a per-channel scale fixes them: divide channel j of the
activation by `s_j` (folded into the norm or linear before, free at run time) and multiply
row j of the weight by `s_j`. The migration strength alpha balances the two:

    s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)      (alpha = 0.5 by default)

Afterwards both have moderate ranges and W8A8 works: per-token int8 activations times
per-channel int8 weights (`QuantLinear(bits=8, act_bits=8)`, `torch._int_mm` underneath).
The same four scale groups as AWQ are smoothed (`labkit.quant.calib`).
"""
from __future__ import annotations

import torch
from torch import nn

from labkit.quant import rtn
from labkit.quant.calib import LayerRunner, calibration_ids, check_architecture, scale_groups
from labkit.quant.qlinear import check_model, quantize_linears


@torch.no_grad()
def activation_maxima(model: nn.Module, ids: torch.Tensor, progress=None) -> list[dict[str, torch.Tensor]]:
    """Per layer, per linear input (by attribute name): max |x| of every input channel."""
    runner = LayerRunner(model, ids)
    maxima = []
    layers = list(model.model.layers)
    for layer in (progress(layers) if progress else layers):
        inputs, output = runner.capture(layer)
        maxima.append({name: x.abs().reshape(-1, x.shape[-1]).amax(0).float() for name, x in inputs.items()})
        runner.advance(output)
    return maxima


def smooth_scales(act_max: torch.Tensor, w_max: torch.Tensor, alpha: float) -> torch.Tensor:
    """s_j = max|X_j|^alpha / max|W_j|^(1 - alpha), per input channel j."""
    s = act_max.float().clamp(min=1e-5).pow(alpha) / w_max.float().clamp(min=1e-5).pow(1 - alpha)
    return s.clamp(min=1e-5)


@torch.no_grad()
def smooth(model: nn.Module, tokenizer, text: str | None = None, alpha: float = 0.5, n_samples: int = 8,
           seqlen: int = 512, progress=None) -> nn.Module:
    """Fold SmoothQuant scales into `model` (in place); its float outputs do not change."""
    check_architecture(model)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    ids = calibration_ids(tokenizer, text, n_samples, seqlen)
    maxima = activation_maxima(model, ids, progress)
    for layer, found in zip(model.model.layers, maxima):
        for group in scale_groups(layer, model.config):
            w_max = torch.stack([lin.weight.abs().amax(0) for lin in group.consumers]).amax(0)
            act_max = found[group.names[0]]
            group.fold(smooth_scales(group.reduce(act_max, "max"), group.reduce(w_max, "max"), alpha))
    return model


def smoothquant_w8a8(model: nn.Module, tokenizer, text: str | None = None, alpha: float = 0.5,
                     n_samples: int = 8, seqlen: int = 512, progress=None) -> nn.Module:
    """Smooth, then quantize every decoder linear to W8A8 (per-channel weights, per-token activations)."""
    check_model(model.config, 8, rtn.PER_CHANNEL, act_bits=8)
    smooth(model, tokenizer, text, alpha, n_samples, seqlen, progress)
    return quantize_linears(model, 8, rtn.PER_CHANNEL, act_bits=8)


def naive_w8a8(model: nn.Module) -> nn.Module:
    """W8A8 without smoothing: the baseline whose activation outliers SmoothQuant fixes."""
    check_architecture(model)
    check_model(model.config, 8, rtn.PER_CHANNEL, act_bits=8)
    return quantize_linears(model, 8, rtn.PER_CHANNEL, act_bits=8)
