"""Exercise 03a (chapter 03): the distillation loss of Hinton et al., with its T^2 factor.

Logits are [..., V]: the last axis is the vocabulary, every other axis a position. Logits
can be in the hundreds, or get there at a low temperature, where exp() overflows: work with
log-probabilities. Return a new tensor; the caller's logits must come back unchanged. Check
your work in notebook 03, or:

    labkit grade ex03_kd_loss --impl exercises/ex03_kd_loss.py
"""
from __future__ import annotations

import torch


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """T^2 * KL(p || q), the mean over positions, where p = softmax(teacher / T) and q = softmax(student / T).

    KL(p || q) = sum_v p_v (log p_v - log q_v), summed over the vocabulary. Returns a scalar tensor."""
    raise NotImplementedError(
        "write kd_loss (T^2 times KL(teacher || student) of the softened distributions) in "
        "exercises/ex03_kd_loss.py; notebook 03, section 'Exercise 03a: the KD loss', explains it")
