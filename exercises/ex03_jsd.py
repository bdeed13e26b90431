"""Exercise 03c (chapter 03): the generalized Jensen-Shannon divergence of GKD.

Logits are [..., V]: the last axis is the vocabulary, every other axis a position. Logits
can be in the hundreds, where probabilities underflow to exactly 0 in float32 and log(0)
is -inf: compute log m from log-probabilities (torch.logaddexp). Return a new tensor; the
caller's logits must come back unchanged. Check your work in notebook 03, or:

    labkit grade ex03_jsd --impl exercises/ex03_jsd.py
"""
from __future__ import annotations

import torch


def generalized_jsd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    """beta * KL(p || m) + (1 - beta) * KL(q || m), the mean over positions, where p = softmax(teacher),
    q = softmax(student) and m = beta * p + (1 - beta) * q. Raise ValueError unless 0 < beta < 1."""
    raise NotImplementedError(
        "write generalized_jsd (both distributions against their beta-mixture m) in exercises/ex03_jsd.py; "
        "notebook 03, section 'Exercise 03c: the generalized JSD', explains it")
