"""Theorem 3.1: d independently masked rank-r terms give rank min(d*r, dims); one shared mask <= r."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import capaboost
from capaboost import CapaBoostConfig, LoRALinear
from capaboost.analysis import delta_rank, expected_fraction, rank_bound
from capaboost.masks import make_masks
from tests.capaboost.tiny import lora_layers, randomize_lora_B, tiny_roberta

OUT, IN = 24, 40


def _layer(d: int, r: int, kind: str = "random", density: float = 0.5, seed: int = 0) -> LoRALinear:
    torch.manual_seed(seed)
    layer = LoRALinear(nn.Linear(IN, OUT), r, 2 * r, make_masks((r, IN), d, density, kind, seed=seed),
                       make_masks((OUT, r), d, density, kind, seed=seed + 100))
    with torch.no_grad():
        layer.lora_B.normal_()
    return layer


@pytest.mark.parametrize("d, r", [(1, 2), (2, 2), (3, 2), (2, 4), (4, 4), (3, 8), (4, 8), (8, 4), (2, 16)])
def test_random_masks_reach_min_dr_dims(d: int, r: int) -> None:
    layer = _layer(d, r)
    assert delta_rank(layer) == min(d * r, OUT, IN) == rank_bound(d, r, (OUT, IN))


@pytest.mark.parametrize("d, r", [(2, 4), (4, 4), (3, 8)])
def test_same_mask_stays_at_r(d: int, r: int) -> None:
    assert delta_rank(_layer(d, r, "same")) <= r


@pytest.mark.parametrize("kind", ["nm", "none"])
def test_other_kinds(kind: str) -> None:
    """nm masks are independent per branch (full d*r); 'none' sums d identical terms (rank r)."""
    rank = delta_rank(_layer(3, 4, kind))
    assert rank == (12 if kind == "nm" else 4)


def test_rank_matches_numpy_svd() -> None:
    """Independent check: rank of the dense delta built in numpy from the raw weights and masks."""
    for d, r, kind in [(3, 4, "random"), (3, 4, "same"), (5, 8, "random")]:
        layer = _layer(d, r, kind, seed=4)
        a, b = layer.lora_A.detach().double().numpy(), layer.lora_B.detach().double().numpy()
        ma, mb = layer.mask_A.numpy(), layer.mask_B.numpy()
        delta = sum((b * mb[i]) @ (a * ma[i]) for i in range(d))
        s = np.linalg.svd(delta, compute_uv=False)
        numpy_rank = int((s > s[0] * 1e-10).sum())
        assert numpy_rank == delta_rank(layer), (d, r, kind)
        assert numpy_rank == (r if kind == "same" else min(d * r, OUT, IN))


def test_delta_rank_on_applied_model() -> None:
    model = capaboost.apply(tiny_roberta(), CapaBoostConfig(d=3, density=0.5, r=4))
    randomize_lora_B(model)
    assert [delta_rank(layer) for layer in lora_layers(model).values()] == [12] * 4
    vanilla = capaboost.apply(tiny_roberta(), CapaBoostConfig(d=1, density=1.0, r=4))
    randomize_lora_B(vanilla)
    assert [delta_rank(layer) for layer in lora_layers(vanilla).values()] == [4] * 4


def test_zero_B_has_rank_zero() -> None:
    model = capaboost.apply(tiny_roberta(), CapaBoostConfig(d=2, r=4))
    assert all(delta_rank(layer) == 0 for layer in lora_layers(model).values())


def test_expected_fraction() -> None:
    assert expected_fraction(2, 0.5) == 0.75 and expected_fraction(1, 0.3) == pytest.approx(0.3)
    union = make_masks((100, 100), 3, 0.3, "random", seed=0).any(0).double().mean()
    assert abs(float(union) - expected_fraction(3, 0.3)) < 0.01


def test_rank_summary_over_a_model() -> None:
    """Every layer's rank by numpy SVD (the oracle) vs the model-wide summary written to result.json."""
    model = capaboost.apply(tiny_roberta(), CapaBoostConfig(d=2, density=0.5, r=4, alpha=8))
    assert capaboost.analysis.rank_summary(model)["max"] == 0  # B starts at zero: no update yet
    randomize_lora_B(model)
    def delta64(layer: LoRALinear) -> np.ndarray:  # sum of masked products, in float64 (no fp32 noise)
        a, b = layer.lora_A.detach().double().numpy(), layer.lora_B.detach().double().numpy()
        pairs = zip(layer.mask_A, layer.mask_B, strict=True)
        return sum((b * mb.numpy()) @ (a * ma.numpy()) for ma, mb in pairs)

    ranks = [np.linalg.matrix_rank(delta64(layer)) for layer in lora_layers(model).values()]
    summary = capaboost.analysis.rank_summary(model)
    assert summary == {"min": min(ranks), "mean": float(np.mean(ranks)), "max": max(ranks), "bound": 8}
    assert summary["min"] == 8
    assert capaboost.analysis.rank_summary(tiny_roberta()) is None
