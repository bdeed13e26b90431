"""Exercise 05 (chapter 05): AWQ's scale search for one linear layer.

Then run the check in notebook 05, or:

    labkit grade ex05_awq_search --impl exercises/ex05_awq_search.py

A linear layer y = x @ w.T with w [N, K] and calibration inputs x [T, K]. AWQ multiplies
input channel k of the weight by s[k] before quantizing and divides the activation by s[k]
(in the model that division is folded into the previous norm, so it is free):

    y ~ (x / s) @ Q(w * s).T        which is the same as   x @ (Q(w * s) / s).T

Channels whose activations are large get s > 1: their weights use more of the int4 grid.

For the quantizer Q use `labkit.quant.rtn.fake_quantize(w, bits, group_size)` (asymmetric
round-to-nearest, quantize then dequantize). Neither function may modify its inputs.
"""
from __future__ import annotations

import torch


def awq_scales(act_mean: torch.Tensor, alpha: float) -> torch.Tensor:
    """Per-channel scales s = a ** alpha from the mean |activation| a of each input channel [K].

    Clamp a to at least 1e-4 first, then normalize: divide s by sqrt(max(s) * min(s)), so
    that the scales are centred around 1 (the largest and smallest are reciprocals).
    """
    raise NotImplementedError(
        "write awq_scales (s = a ** alpha, centred on 1) in exercises/ex05_awq_search.py; "
        "notebook 05, section 'Exercise 05: the scale search for one layer', explains it")


def search_scale(w: torch.Tensor, x: torch.Tensor, bits: int = 4, group_size: int = 32,
                 n_grid: int = 20) -> tuple[float, torch.Tensor, list[float]]:
    """The best alpha on the grid 0, 1/n_grid, ..., (n_grid - 1)/n_grid -> (alpha, scales, losses).

    a = mean over tokens of |x| per input channel. For each alpha: s = awq_scales(a, alpha),
    w_q = Q(w * s) / s (s multiplies the columns of w), and the loss is the mean squared
    error between x @ w_q.T and x @ w.T. Return the alpha with the smallest loss (the first
    one on a tie), its scales, and the list of all n_grid losses (as floats) in grid order.
    alpha = 0 gives s = 1: plain round-to-nearest.
    """
    raise NotImplementedError(
        "write search_scale (the grid search for the best alpha) in exercises/ex05_awq_search.py; "
        "notebook 05, section 'Exercise 05: the scale search for one layer', explains it")
