"""Exercise 03b (chapter 03): reverse KL, the mode-seeking divergence of MiniLLM.

Logits are [..., V]: the last axis is the vocabulary, every other axis a position. Logits
can be in the hundreds, or get there at a low temperature, where exp() overflows: work with
log-probabilities. Return a new tensor; the caller's logits must come back unchanged. Check
your work in notebook 03, or:

    labkit grade ex03_reverse_kl --impl exercises/ex03_reverse_kl.py
"""
from __future__ import annotations

import torch


def reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """T^2 * KL(q || p), the mean over positions, where q = softmax(student / T) and p = softmax(teacher / T).

    KL(q || p) = sum_v q_v (log q_v - log p_v): the student's distribution weighs the sum. Returns a scalar."""
    raise NotImplementedError(
        "write reverse_kl (T^2 times KL(student || teacher)) in exercises/ex03_reverse_kl.py; "
        "notebook 03, section 'Exercise 03b: reverse KL', explains it")
