"""Masks: exact density, N:M structure, stable seeding (order, process, global RNG), uniformity."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

import capaboost
from capaboost import CapaBoostConfig
from capaboost.masks import make_masks, mask_seed
from tests.capaboost.tiny import lora_layers, tiny_roberta

ROOT = Path(__file__).resolve().parents[2]
CFG = CapaBoostConfig(method="lora", d=3, density=0.5, mask="random", seed=0, r=4, alpha=8)


@pytest.mark.parametrize("shape, d, density", [
    ((8, 32), 2, 0.5), ((3, 7), 4, 0.3), ((5, 5), 3, 0.1), ((32, 8), 2, 0.9), ((4, 5), 2, 0.5),
    ((1, 10), 2, 0.25), ((7, 3), 2, 0.9), ((5, 5), 3, 0.3),  # 2.5, 18.9, 7.5 entries: round, not floor
])
def test_random_exact_density(shape: tuple[int, int], d: int, density: float) -> None:
    masks = make_masks(shape, d, density, "random", seed=7)
    assert masks.dtype == torch.bool and tuple(masks.shape) == (d, *shape)
    keep = round(density * shape[0] * shape[1])
    assert [int(m.sum()) for m in masks] == [keep] * d


def test_random_branches_differ_and_density_one_is_all_ones() -> None:
    masks = make_masks((8, 32), 4, 0.5, "random", seed=1)
    assert all(not torch.equal(masks[i], masks[j]) for i in range(4) for j in range(i + 1, 4))
    assert bool(make_masks((8, 32), 3, 1.0, "random", seed=1).all())


@pytest.mark.parametrize("density, n", [(0.25, 1), (0.5, 2), (0.75, 3)])
def test_nm_along_input_dim(density: float, n: int) -> None:
    masks = make_masks((8, 16), 3, density, "nm", seed=2)
    groups = masks.view(3, 8, 4, 4)  # [d, out, in/M, M]: groups of M consecutive *input* entries
    assert bool((groups.sum(-1) == n).all())
    assert not torch.equal(masks[0], masks[1])
    # the pattern is not simply along rows: transposed groups do not all hold exactly n
    assert not bool((masks.transpose(1, 2).reshape(3, 16, -1, 4).sum(-1) == n).all())


def test_nm_group_size_8() -> None:
    masks = make_masks((4, 16), 2, 0.5, "nm", seed=0, nm_group=8)
    assert bool((masks.view(2, 4, 2, 8).sum(-1) == 4).all())


def test_same_and_none() -> None:
    same = make_masks((8, 32), 3, 0.5, "same", seed=3)
    assert all(torch.equal(same[0], same[i]) for i in range(3))
    assert int(same[0].sum()) == 128
    none = make_masks((8, 32), 3, 0.5, "none", seed=3)
    assert none.dtype == torch.bool and tuple(none.shape) == (3, 8, 32) and bool(none.all())


def test_mask_seed_is_a_stable_hash() -> None:
    """sha256 of 'seed/name/tensor', not Python's salted hash(): pinned value, same everywhere."""
    key = b"0/roberta.encoder.layer.0.attention.self.query/lora_A"
    expected = int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & (2**63 - 1)
    assert mask_seed(0, "roberta.encoder.layer.0.attention.self.query", "lora_A") == expected
    assert mask_seed(0, "a", "lora_A") != mask_seed(0, "a", "lora_B") != mask_seed(1, "a", "lora_B")


def _model_masks(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {n: (m.mask_A.clone(), m.mask_B.clone()) for n, m in lora_layers(model).items()}


def _digest(masks: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> str:
    h = hashlib.sha256()
    for name, (a, b) in sorted(masks.items()):
        h.update(name.encode())
        h.update(a.numpy().tobytes())
        h.update(b.numpy().tobytes())
    return h.hexdigest()


def _reverse_children(model: nn.Module) -> None:
    """Same names, opposite registration order everywhere: named_modules() walks it backwards."""
    for module in model.modules():
        module._modules = OrderedDict(reversed(list(module._modules.items())))


def test_masks_independent_of_module_order_and_global_rng() -> None:
    ref = _model_masks(capaboost.apply(tiny_roberta(), CFG))
    names = sorted(ref)
    assert len(names) == 4
    # different layers and targets get different masks
    assert not torch.equal(ref[names[0]][0], ref[names[1]][0])

    other = tiny_roberta(seed=11)
    _reverse_children(other)
    order = [n for n, _ in other.named_modules() if n.endswith(("query", "value"))]
    assert order == sorted(order, reverse=True)  # the walk really is reversed
    torch.manual_seed(1234)
    torch.rand(1000)
    got = _model_masks(capaboost.apply(other, CFG))
    assert sorted(got) == names
    for n in names:
        assert torch.equal(got[n][0], ref[n][0]) and torch.equal(got[n][1], ref[n][1]), n


class _AB(nn.Module):
    def __init__(self, first: str) -> None:
        super().__init__()
        for name in (first, "b" if first == "a" else "a"):
            torch.rand(10)  # construction consumes global RNG differently in each order
            setattr(self, name, nn.Linear(16, 8))


def test_custom_module_construction_order() -> None:
    cfg = CapaBoostConfig(d=2, density=0.5, r=4, target_modules=("a", "b"))
    torch.manual_seed(0)
    one = _model_masks(capaboost.apply(_AB("a"), cfg))
    torch.manual_seed(5)
    two = _model_masks(capaboost.apply(_AB("b"), cfg))
    assert sorted(one) == sorted(two) == ["a", "b"]
    assert all(torch.equal(one[n][k], two[n][k]) for n in one for k in range(2))


@pytest.mark.slow
def test_masks_identical_in_a_subprocess() -> None:
    here = _digest(_model_masks(capaboost.apply(tiny_roberta(), CFG)))
    code = ("import torch, capaboost; from tests.capaboost.tiny import tiny_roberta;"
            "from tests.capaboost.test_masks import CFG, _digest, _model_masks;"
            "torch.manual_seed(99); torch.rand(7);"
            "print(_digest(_model_masks(capaboost.apply(tiny_roberta(seed=3), CFG))))")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                         check=True)
    assert out.stdout.strip().splitlines()[-1] == here


def test_mask_seed_changes_masks() -> None:
    a = _model_masks(capaboost.apply(tiny_roberta(), CFG))
    b = _model_masks(capaboost.apply(tiny_roberta(), CapaBoostConfig(**{**CFG.to_dict(), "mask_seed": 1})))
    assert all(not torch.equal(a[n][0], b[n][0]) for n in a)
    assert not torch.equal(make_masks((8, 32), 2, 0.5, "random", 0), make_masks((8, 32), 2, 0.5, "random", 1))
    assert not torch.equal(make_masks((8, 32), 2, 0.5, "nm", 0), make_masks((8, 32), 2, 0.5, "nm", 1))


def test_masks_are_buffers_outside_state_dict() -> None:
    model = capaboost.apply(tiny_roberta(), CFG)
    layer = next(iter(lora_layers(model).values()))
    assert layer.mask_A.dtype == torch.bool and not isinstance(layer.mask_A, nn.Parameter)
    assert not any("mask" in k for k in model.state_dict())
    assert "mask_A" in dict(layer.named_buffers())


@pytest.mark.parametrize("kind, density", [("random", 0.5), ("random", 0.3), ("nm", 0.5)])
def test_keep_frequency_is_uniform(kind: str, density: float) -> None:
    """Over many seeds every position is kept about `density` of the time (chi-square, and a
    Bonferroni binomial bound per position). Seeds are fixed, so the test is deterministic."""
    seeds, shape, d = 300, (8, 16), 2
    counts = sum(make_masks(shape, d, density, kind, seed=s).double().sum(0) for s in range(seeds))
    n = seeds * d
    freq = (counts / n).numpy().ravel()
    keep = round(density * 128) / 128 if kind == "random" else density
    chi2 = stats.chisquare(counts.numpy().ravel())
    assert chi2.pvalue > 1e-3, chi2
    lo, hi = stats.binom.interval(1 - 1e-3 / freq.size, n, keep)
    assert np.all(freq >= lo / n) and np.all(freq <= hi / n), (freq.min(), freq.max())


def test_branches_are_independent() -> None:
    """Two random masks at density 0.5 overlap on ~25% of entries, so their union is ~75%
    (1 - (1 - p)^d, the paper's parameter count)."""
    overlaps = [float((m[0] & m[1]).double().mean()) for m in
                (make_masks((16, 16), 2, 0.5, "random", seed=s) for s in range(200))]
    assert abs(np.mean(overlaps) - 0.25) < 0.01
    union = make_masks((64, 64), 2, 0.5, "random", seed=0).any(0).double().mean()
    assert abs(float(union) - capaboost.analysis.expected_fraction(2, 0.5)) < 0.02


# Pinned: any change in mask generation (algorithm, torch's generator, the seed hash) changes these,
# and with them every saved adapter's masks. Update them only together with the checkpoint format.
GOLDEN = {
    ((48, 768), 2, 0.5, "random", 0): "9f19692036382f0d386bd180cb50d55fb0b8d4c990fdab1b5034d73bf8785581",
    ((8, 16), 3, 0.5, "nm", 1): "b6892be4331a788d71f7c158ff558c7c4525909f265a02c7b219281ca78836af",
    ((16, 8), 4, 0.3, "same", 2): "20d9f61df0697a9b2ae789ccd7742d12e78237226676cdcf079ca7d1a3c4b7cf",
}
GOLDEN_MODEL = "07561b1140b2fc9d014d1e0f8e3bbed5afa0fc164c394cca1388904ad42cb018"


@pytest.mark.parametrize("args", sorted(GOLDEN), ids=[a[3] for a in sorted(GOLDEN)])
def test_golden_mask_digests(args: tuple) -> None:
    assert hashlib.sha256(make_masks(*args).numpy().tobytes()).hexdigest() == GOLDEN[args]


def test_golden_model_digest() -> None:
    """capaboost.mask_digest of a tiny RoBERTa, recomputed here from the masks (name, A, B bytes)."""
    model = capaboost.apply(tiny_roberta(), CapaBoostConfig(d=2, density=0.5, r=4, alpha=8))
    assert _digest(_model_masks(model)) == capaboost.mask_digest(model) == GOLDEN_MODEL


def test_no_ties_to_break() -> None:
    """The 48x768 case had 56 entries that a stable sort of float32 draws placed differently; ranks
    drawn here come from distinct keys, so re-ranking them with numpy's stable and unstable sorts
    (a different sort implementation) picks the same positions."""
    from capaboost.masks import _distinct_ranks

    keys_gen = torch.Generator().manual_seed(5)
    ranks = _distinct_ranks(keys_gen, (2,), 48 * 768)
    assert all(torch.equal(torch.sort(r).values, torch.arange(48 * 768)) for r in ranks)  # permutations
    keys = torch.randint(0, (2**62) // (48 * 768), (2, 48 * 768), generator=torch.Generator().manual_seed(5))
    keys = (keys * (48 * 768) + torch.arange(48 * 768)).numpy()
    assert len(np.unique(keys[0])) == keys.shape[1]
    for kind in ("stable", "quicksort", "heapsort"):
        assert np.array_equal(np.argsort(keys, axis=-1, kind=kind), ranks.numpy())
