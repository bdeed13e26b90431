"""Distillation losses: how far a student's next-token distribution is from its teacher's.

Logits are [..., V]; the last axis is the vocabulary and every other axis a position. Each
loss is the mean over positions (optionally only where `mask` is true) of a divergence
between the two distributions, computed from log-probabilities (`log_softmax`, stable for
any logit scale), in float32.

- `forward_kl`: KL(teacher || student) of temperature-softened distributions, times T^2
  (Hinton et al. 2015): the gradient of the softened loss shrinks as 1/T^2, so the factor
  keeps its size comparable to the hard-label loss it is mixed with. Mass-covering: the
  student is punished wherever the teacher puts probability and it does not.
- `reverse_kl`: KL(student || teacher) (MiniLLM): mode-seeking; the student may ignore
  some of the teacher's modes but is punished for putting mass where the teacher has none.
- `generalized_jsd`: beta KL(p || m) + (1 - beta) KL(q || m) with m = beta p + (1 - beta) q
  (GKD, Agarwal et al. 2024); beta -> 0 behaves like forward KL, beta -> 1 like reverse
  KL (both scaled by beta or 1 - beta), and every value is bounded.
- `cross_entropy`: the hard labels alone, i.e. plain fine-tuning on the same tokens.
- `HiddenMatcher`: MSE between normalized hidden states of mapped layers, through a learned
  projection where the widths differ.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("fkl", "rkl", "jsd", "ce")


def _mean(per_position: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return per_position.mean()
    mask = mask.to(per_position.dtype)
    return (per_position * mask).sum() / mask.sum().clamp(min=1)


def _kl(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per position from log-probabilities: sum_v p (log p - log q)."""
    return (logp.exp() * (logp - logq)).sum(-1)


def forward_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0,
               mask: torch.Tensor | None = None) -> torch.Tensor:
    """T^2 KL(softmax(teacher / T) || softmax(student / T)), the mean over positions."""
    s = (student.float() / temperature).log_softmax(-1)
    t = (teacher.float() / temperature).log_softmax(-1)
    return temperature**2 * _mean(_kl(t, s), mask)


def reverse_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0,
               mask: torch.Tensor | None = None) -> torch.Tensor:
    """T^2 KL(softmax(student / T) || softmax(teacher / T)), the mean over positions."""
    s = (student.float() / temperature).log_softmax(-1)
    t = (teacher.float() / temperature).log_softmax(-1)
    return temperature**2 * _mean(_kl(s, t), mask)


def generalized_jsd(student: torch.Tensor, teacher: torch.Tensor, beta: float = 0.5, temperature: float = 1.0,
                    mask: torch.Tensor | None = None) -> torch.Tensor:
    """beta KL(t || m) + (1 - beta) KL(s || m), m = beta t + (1 - beta) s (teacher t, student s)."""
    if not 0 < beta < 1:
        raise ValueError(f"beta must be in (0, 1), got {beta}")
    s = (student.float() / temperature).log_softmax(-1)
    t = (teacher.float() / temperature).log_softmax(-1)
    # log m = logsumexp(log beta + t, log(1 - beta) + s): no probabilities below float32's range
    m = torch.logaddexp(t + math.log(beta), s + math.log(1 - beta))
    return temperature**2 * _mean(beta * _kl(t, m) + (1 - beta) * _kl(s, m), mask)


def cross_entropy(student: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """-log p_student(label), the mean over positions: the hard-label loss."""
    logp = student.float().log_softmax(-1)
    return _mean(-logp.gather(-1, labels[..., None])[..., 0], mask)


def distill_loss(kind: str, student: torch.Tensor, teacher: torch.Tensor | None, labels: torch.Tensor,
                 temperature: float = 1.0, alpha: float = 0.0, beta: float = 0.5,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """(1 - alpha) * soft loss + alpha * cross-entropy; `ce` is the cross-entropy alone."""
    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r} (one of {', '.join(LOSSES)})")
    hard = cross_entropy(student, labels, mask)
    if kind == "ce":
        return hard
    if kind == "fkl":
        soft = forward_kl(student, teacher, temperature, mask)
    elif kind == "rkl":
        soft = reverse_kl(student, teacher, temperature, mask)
    else:
        soft = generalized_jsd(student, teacher, beta, temperature, mask)
    return soft if alpha == 0 else (1 - alpha) * soft + alpha * hard


def layer_map(student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """(student layer, teacher layer) pairs, evenly spaced: each student layer's output is matched
    to the teacher layer at the same relative depth, the last to the last."""
    return [(i, round((i + 1) * teacher_layers / student_layers) - 1) for i in range(student_layers)]


class HiddenMatcher(nn.Module):
    """MSE between layer-normalized hidden states of mapped layers (student -> teacher).

    Normalizing both sides (zero mean, unit variance per token) compares directions, not the
    scale of the residual stream, which grows with depth and differs between the two models.
    Where the widths differ, a learned linear map takes the student's states to the teacher's
    width (FitNets); it is trained with the student and not saved with it.
    """

    def __init__(self, student_width: int, teacher_width: int, pairs: list[tuple[int, int]]):
        super().__init__()
        self.pairs = pairs
        self.proj = nn.ModuleList(
            nn.Identity() if student_width == teacher_width else nn.Linear(student_width, teacher_width, bias=False)
            for _ in pairs)

    def forward(self, student: dict[int, torch.Tensor], teacher: dict[int, torch.Tensor],
                mask: torch.Tensor | None = None) -> torch.Tensor:
        total = 0.0
        for proj, (i, j) in zip(self.proj, self.pairs):
            s = F.layer_norm(proj(student[i].float()), (teacher[j].shape[-1],))
            t = F.layer_norm(teacher[j].float(), (teacher[j].shape[-1],))
            total = total + _mean(((s - t) ** 2).mean(-1), mask)
        return total / len(self.pairs)


class HiddenStates:
    """Forward hooks that keep the output of chosen decoder layers for one forward pass."""

    def __init__(self, model: nn.Module, layers: list[int]):
        self.states: dict[int, torch.Tensor] = {}
        self._handles = [model.model.layers[i].register_forward_hook(self._keep(i)) for i in layers]

    def _keep(self, i: int):
        def hook(module, inputs, output):
            self.states[i] = output
        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
