"""``trainer.clip=official``: gradient clipping as the authors' trainer did it, without forking the Trainer.

The authors keep d physical copies of every CapaBoost weight and, before clipping, write the summed
masked gradient into each copy; ``clip_grad_norm_`` over the model's parameters then counts that
gradient d times, so the global norm over the CapaBoost weights is sqrt(d) times the true one and
clipping starts earlier (their src/transformers/trainer.py, see docs/paper.md). With one shared
tensor (ours) the plain norm is the true one (``trainer.clip=true_norm``).

Here the Trainer's own clipping is off (``max_grad_norm=0``; it still unscales fp16 gradients when it
measures the norm) and this callback clips in ``on_pre_optimizer_step`` with the official norm,
by the same rule as ``torch.nn.utils.clip_grad_norm_``: every gradient times min(1, max / (norm + 1e-6)).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback

import capaboost


def copies(model: nn.Module) -> dict[int, int]:
    """id(parameter) -> d for every masked CapaBoost weight (the authors hold d copies of it)."""
    return {id(p): int(m.shape[0]) for mod in capaboost.peft_modules(model).values()
            for p, m in mod.masked_parameters()}


def official_norm(parameters: list[nn.Parameter], d_of: dict[int, int]) -> torch.Tensor:
    """sqrt(sum_p d_p * ||g_p||^2): the global norm over the authors' d copies of each weight."""
    grads = [(p.grad, d_of.get(id(p), 1)) for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.sqrt(sum(d * g.detach().float().pow(2).sum() for g, d in grads))


def clip_official(parameters: list[nn.Parameter], d_of: dict[int, int], max_norm: float) -> torch.Tensor:
    """Clip in place like ``clip_grad_norm_`` with the official norm; returns that norm."""
    norm = official_norm(parameters, d_of)
    coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    for p in parameters:
        if p.grad is not None:
            p.grad.detach().mul_(coef.to(p.grad.device, p.grad.dtype))
    return norm


class OfficialClip(TrainerCallback):
    """Clips before each optimizer step with the norm the authors' trainer measured."""

    def __init__(self, model: nn.Module, max_norm: float) -> None:
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self.d_of = copies(model)
        self.max_norm = max_norm

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        clip_official(self.parameters, self.d_of, self.max_norm)
