"""SparseGPT (Frantar & Alistarh 2023): prune, then update the remaining weights to compensate.

Each output row w of a linear layer is pruned to minimize the squared error of its output on
the calibration inputs X, ||w X^T - w' X^T||^2, whose Hessian is H = 2 X^T X (the same for
every row). Optimal Brain Surgeon says: removing weight q costs w_q^2 / [H^-1]_qq, and the
best correction of the weights not yet processed is

    delta = -(w_q / [H^-1]_qq) * H^-1[q, :]

SparseGPT processes the columns left to right, so that the inverse Hessian of the columns
still to come is a row of the Cholesky factor of H^-1 (no re-inversion per column):

- blocks of 128 columns: at each block start the mask of the block is chosen from
  w^2 / diag(H^-1)^2 (unstructured: the lowest scores of the whole block; N:M: in each group
  of M columns, when the loop reaches it, with the weights already updated);
- within the block, column by column: zero the masked weights, spread their error over the
  block's later columns;
- lazy batched update: the rest of the matrix receives the block's accumulated errors in one
  matmul.

H is dampened by 1% of its mean diagonal so the Cholesky factorization exists even when
some input channels are (nearly) dead. The reference implementation is
github.com/IST-DASLab/sparsegpt, which this follows line for line in spirit.
"""
from __future__ import annotations

import torch

BLOCK = 128
DAMP = 0.01


def hessian(x: torch.Tensor) -> torch.Tensor:
    """H = 2 X^T X / tokens for inputs [..., in] (float32)."""
    x = x.reshape(-1, x.shape[-1]).float()
    return 2 * x.T @ x / x.shape[0]


@torch.no_grad()
def sparsegpt_prune(weight: torch.Tensor, H: torch.Tensor, sparsity: float = 0.5, n: int = 0, m: int = 0,
                    block: int = BLOCK, damp: float = DAMP) -> torch.Tensor:
    """The pruned and updated weight [out, in] (a new tensor); N:M when m > 0 (keep n of every m)."""
    W = weight.detach().float().clone()
    H = H.float().clone()
    columns = W.shape[1]
    dead = H.diagonal() == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H.diagonal().add_(damp * H.diagonal().mean())
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    for i1 in range(0, columns, block):
        i2 = min(i1 + block, columns)
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)
        d = Hinv1.diagonal()
        if m == 0:
            score = W1 ** 2 / d[None, :] ** 2
            mask1 = torch.zeros_like(W1, dtype=torch.bool)  # True: pruned
            k = round(score.numel() * sparsity)
            if k:
                mask1.view(-1)[torch.sort(score.flatten(), stable=True).indices[:k]] = True
        else:
            mask1 = torch.zeros_like(W1, dtype=torch.bool)
        for i in range(i2 - i1):
            if m and i % m == 0:
                score = W1[:, i:i + m] ** 2 / d[None, i:i + m] ** 2
                low = torch.sort(score, dim=1, stable=True).indices[:, : m - n]
                mask1.scatter_(1, i + low, True)
            w = W1[:, i]
            q = w.masked_fill(mask1[:, i], 0)
            err = (w - q) / d[i]
            W1[:, i:] -= err[:, None] * Hinv1[i, i:][None, :]
            W1[:, i] = q  # exactly zero where pruned (the update above leaves rounding dust)
            Err1[:, i] = err
        W[:, i1:i2] = W1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return W.to(weight.dtype)
