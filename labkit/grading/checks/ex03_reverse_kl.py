"""Checks for exercise 03b: reverse KL, the same checks as 03a's with the direction swapped."""
from __future__ import annotations

from labkit.grading.checks.ex03_kd_loss import backward, divergence_checks, forward

(matches_the_definition, t_squared_factor, softmax_over_the_vocabulary,
 stable_for_large_logits_and_low_temperature, boundaries_and_inputs_unchanged) = divergence_checks(
    "reverse_kl", backward, forward,
    "this is KL(teacher || student), the forward direction: reverse KL weighs by the student, "
    "sum q * (log q - log p) with q = softmax(student / T)")
