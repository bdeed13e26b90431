"""Exercise 03b (chapter 03): reverse KL, the mode-seeking divergence of MiniLLM.

Logits are [..., V]: the last axis is the vocabulary, every other axis a position. Check your
work in notebook 03, or:

    labkit grade ex03_reverse_kl --impl exercises/ex03_reverse_kl.py
"""
from __future__ import annotations

import torch


def reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """T^2 * KL(q || p), the mean over positions, where q = softmax(student / T) and p = softmax(teacher / T)."""
    log_q = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = (log_q.exp() * (log_q - log_p)).sum(dim=-1)                         # weighted by the student's q
    return temperature**2 * kl.mean()
