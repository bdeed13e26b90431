"""Exercise 01b (chapter 01): temperature, top-k and top-p (nucleus) sampling filters.

Each filter takes logits [..., V] (one row per sequence) and returns logits of the same
shape where dropped tokens are set to -inf (so that softmax gives them probability 0).
Logits can be in the hundreds (or get there at a low temperature), where exp() overflows.
Return new tensors; the caller's logits must come back unchanged.
Check your work in notebook 01, or:

    labkit grade ex01_top_p --impl exercises/ex01_top_p.py
"""
from __future__ import annotations

import torch


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Scale the logits for sampling at `temperature` (> 0): below 1 sharpens the
    distribution, above 1 flattens it."""
    raise NotImplementedError(
        "write apply_temperature (logits scaled by the temperature) in exercises/ex01_top_p.py; "
        "notebook 01, section 'Exercise 01b: temperature, top-k, top-p', explains it")


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row; k <= 0 or k >= V keeps everything."""
    raise NotImplementedError(
        "write top_k_filter (keep the k largest logits) in exercises/ex01_top_p.py; "
        "notebook 01, section 'Exercise 01b: temperature, top-k, top-p', explains it")


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probabilities sum to at least p.

    Sort by probability; a token is kept when the tokens ranked *above* it sum to less
    than p. So the token that crosses p is kept, and the most likely token always is.
    p >= 1 keeps everything.
    """
    raise NotImplementedError(
        "write top_p_filter (keep the nucleus of mass p) in exercises/ex01_top_p.py; "
        "notebook 01, section 'Exercise 01b: temperature, top-k, top-p', explains it")


def sampling_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """The distribution a sampler draws from: temperature, then top-k, then top-p, then softmax."""
    raise NotImplementedError(
        "write sampling_probs (temperature, top-k, top-p, softmax) in exercises/ex01_top_p.py; "
        "notebook 01, section 'Exercise 01b: temperature, top-k, top-p', explains it")
