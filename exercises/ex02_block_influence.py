"""Exercise 02c (chapter 02): block influence, and which layers to drop.

Fill in the two functions with plain torch operations, then run the check in notebook 02, or:

    labkit grade ex02_block_influence --impl exercises/ex02_block_influence.py

A decoder block maps hidden states x_in [..., hidden] (any leading dimensions: batch, tokens)
to x_out of the same shape. Its block influence is 1 minus the mean, over tokens, of the cosine
similarity between a token's input and output vectors: 0 when the block changes no token's
direction. Neither function may modify its inputs.
"""
from __future__ import annotations

import torch


def block_influence(x_in: torch.Tensor, x_out: torch.Tensor) -> float:
    """1 - mean over tokens of cos(x_in[t], x_out[t]), each cosine over the hidden dimension."""
    raise NotImplementedError(
        "write block_influence (1 - the mean per-token cosine similarity) in exercises/ex02_block_influence.py; "
        "notebook 02, section 'Exercise 02c: block influence', explains it")


def layers_to_drop(influence: list[float], n: int) -> list[int]:
    """The indices of the n layers of lowest influence, in increasing index order (where
    influences tie, the later layer is dropped first). Raise ValueError unless 0 <= n < len(influence)."""
    raise NotImplementedError(
        "write layers_to_drop (the n least influential layers) in exercises/ex02_block_influence.py; "
        "notebook 02, section 'Exercise 02c: block influence', explains it")
