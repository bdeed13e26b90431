"""Exercise 03c (chapter 03): the generalized Jensen-Shannon divergence of GKD.

Logits are [..., V]: the last axis is the vocabulary, every other axis a position. Check your
work in notebook 03, or:

    labkit grade ex03_jsd --impl exercises/ex03_jsd.py
"""
from __future__ import annotations

import math

import torch


def generalized_jsd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    """beta * KL(p || m) + (1 - beta) * KL(q || m), the mean over positions, where p = softmax(teacher),
    q = softmax(student) and m = beta * p + (1 - beta) * q."""
    if not 0 < beta < 1:
        raise ValueError(f"beta must be in (0, 1), got {beta}")
    log_q = torch.log_softmax(student_logits.float(), dim=-1)
    log_p = torch.log_softmax(teacher_logits.float(), dim=-1)
    # log m = log(beta p + (1 - beta) q), computed from the logs: no probability underflows to log(0)
    log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log(1 - beta))
    kl_pm = (log_p.exp() * (log_p - log_m)).sum(dim=-1)
    kl_qm = (log_q.exp() * (log_q - log_m)).sum(dim=-1)
    return (beta * kl_pm + (1 - beta) * kl_qm).mean()
