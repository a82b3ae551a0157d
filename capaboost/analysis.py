"""Rank of delta W (Theorem 3.1: d masked rank-r terms reach rank min(d*r, dims))."""
from __future__ import annotations

import torch
from torch import nn


def delta_rank(layer: nn.Module, rtol: float | None = None) -> int:
    """Numerical rank of the layer's delta W at float32 precision.

    Computed in float64 from the stacked factors, so float32 round-off in the product
    cannot masquerade as extra rank (the ``same``-mask ablation stays at <= r).
    """
    if hasattr(layer, "stacked"):
        a, b = (t.detach().double() for t in layer.stacked())
        delta = b @ a
    else:
        delta = layer.delta_weight().detach().double()
    return numerical_rank(delta, rtol)


def numerical_rank(delta: torch.Tensor, rtol: float | None = None) -> int:
    """Rank of a delta W at float32 precision (singular values above max(shape) * eps32 * the largest),
    computed in float64. Also what the harness measures PEFT-library baselines with."""
    delta = delta.detach().double()
    if rtol is None:
        rtol = max(delta.shape) * torch.finfo(torch.float32).eps
    return int(torch.linalg.matrix_rank(delta, rtol=rtol))


def rank_bound(d: int, r: int, shape: tuple[int, int]) -> int:
    return min(d * r, *shape)


def expected_fraction(d: int, density: float) -> float:
    """Expected share of a weight that at least one of d independent masks keeps."""
    return 1.0 - (1.0 - density) ** d


def rank_summary(model: nn.Module) -> dict[str, float] | None:
    """Measured rank of every LoRA delta W in a model (None without LoRA layers), for Fig. 1."""
    from .lora import LoRALinear

    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    if not layers:
        return None
    ranks = [delta_rank(m) for m in layers]
    bound = min(rank_bound(m.d, m.r, (m.rows[1] - m.rows[0], m.shape[1])) for m in layers)
    return {"min": min(ranks), "mean": sum(ranks) / len(ranks), "max": max(ranks), "bound": bound}
