"""Exercise 03a (chapter 03): the distillation loss of Hinton et al., with its T^2 factor.

Logits are [..., V]: the last axis is the vocabulary, every other axis a position. Check your
work in notebook 03, or:

    labkit grade ex03_kd_loss --impl exercises/ex03_kd_loss.py
"""
from __future__ import annotations

import torch


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """T^2 * KL(p || q), the mean over positions, where p = softmax(teacher / T) and q = softmax(student / T)."""
    log_q = torch.log_softmax(student_logits.float() / temperature, dim=-1)   # stable: subtracts the max
    log_p = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1)                         # one value per position
    return temperature**2 * kl.mean()
