"""The d masked branches of one shared weight, computed as one wide matrix.

Stacking ``W * M_i`` along the rank axis turns ``sum_i (B*M^B_i)(A*M^A_i)`` into a single
product of rank ``d*r``: the same FLOPs as a LoRA of rank d*r, no Python loop over
branches, and autograd gives ``dL/dW = sum_i M_i * dL/dW_i`` -- exactly what the official
"d copies, mask and sum the grads, re-mask after the step" training computes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def stack_in(weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``weight`` [k, in], ``mask`` [d, k, in] -> the d masked copies as rows, [d*k, in]."""
    return (weight * mask).reshape(-1, weight.shape[-1])


def stack_out(weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``weight`` [out, k], ``mask`` [d, out, k] -> the d masked copies as columns, [out, d*k]."""
    return (weight * mask).transpose(0, 1).reshape(weight.shape[0], -1)


def project_in(x: torch.Tensor, stacked: torch.Tensor, d: int, dropout: float = 0.0,
               training: bool = False) -> torch.Tensor:
    """``x`` [..., in] through the stacked rows [d*k, in] -> [..., d*k].

    With dropout each branch sees its own dropout mask of ``x`` (the official branches are
    separate modules, each with its own dropout); without it, one matmul.
    """
    if dropout == 0.0 or not training:
        return x @ stacked.T
    xd = F.dropout(x.unsqueeze(-2).expand(*x.shape[:-1], d, x.shape[-1]), dropout, True)
    per_branch = stacked.view(d, -1, stacked.shape[-1])
    return torch.einsum("...di,dki->...dk", xd, per_branch).flatten(-2)
