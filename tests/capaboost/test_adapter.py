"""CapaBoost Pfeiffer adapter: the stacked bottleneck equals a loop over branches, d=1 equals a
reference Pfeiffer forward (adapter-transformers' PfeifferConfig), training touches PEFT only."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import capaboost
from capaboost import CapaBoostConfig, MaskedBottleneck, PfeifferOutput
from capaboost.masks import make_masks
from tests.capaboost.tiny import (
    TEXT_MODELS,
    batch,
    logits_pair,
    one_step_changes,
    tiny_roberta,
)


def _bottleneck(d: int, density: float, kind: str, activation: nn.Module) -> MaskedBottleneck:
    torch.manual_seed(0)
    module = MaskedBottleneck(16, 8, 12, make_masks((8, 16), d, density, kind, seed=1),
                              make_masks((12, 8), d, density, kind, seed=2), activation)
    with torch.no_grad():  # nonzero biases, larger weights: every term visible
        for p in module.parameters():
            p.normal_(0, 0.5)
    return module


def _loop(m: MaskedBottleneck, x: torch.Tensor) -> torch.Tensor:
    """Official: sum over d branches of up_i(act(down_i(x))), each branch with its own (shared) biases."""
    return sum(F.linear(m.activation(F.linear(x, m.down_weight * m.mask_down[i], m.down_bias)),
                        m.up_weight * m.mask_up[i], m.up_bias) for i in range(m.d))


@pytest.mark.parametrize("d, density, kind", [(1, 1.0, "random"), (2, 0.5, "random"), (3, 0.3, "random"),
                                              (2, 0.5, "nm"), (2, 0.5, "same")])
@pytest.mark.parametrize("activation", [nn.ReLU(), nn.Tanh()], ids=["relu", "tanh"])
def test_bottleneck_equals_loop(float64, d: int, density: float, kind: str, activation: nn.Module) -> None:
    m = _bottleneck(d, density, kind, activation)
    x = torch.randn(3, 5, 16)
    w = torch.randn(3, 5, 12)
    y = m(x)
    torch.testing.assert_close(y, _loop(m, x), atol=1e-10, rtol=0)
    grads = []
    for out in (y, _loop(m, x)):
        m.zero_grad()
        (out * w).sum().backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    for ours, theirs in zip(*grads, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-10, rtol=0)


def test_bottleneck_init_and_masks() -> None:
    """adapter-transformers' "bert" init: normal(0, 0.02) weights, zero biases."""
    m = MaskedBottleneck(256, 64, 256, make_masks((64, 256), 2, 0.5), make_masks((256, 64), 2, 0.5),
                         nn.ReLU()).requires_grad_(False)
    assert not m.down_bias.any() and not m.up_bias.any()
    assert abs(float(m.down_weight.std()) - 0.02) < 2e-3 and abs(float(m.up_weight.std()) - 0.02) < 2e-3
    with pytest.raises(ValueError, match="mask shapes"):
        MaskedBottleneck(16, 4, 16, make_masks((4, 8), 2, 0.5), make_masks((16, 4), 2, 0.5), nn.ReLU())


class RefPfeiffer(nn.Module):
    """Reference Pfeiffer output layer: out = LN(h + up(relu(down(LN(h + r)))) + r), h = dropout(dense(x))."""

    def __init__(self, base: nn.Module, down: nn.Linear, up: nn.Linear) -> None:
        super().__init__()
        self.base, self.down, self.up = base, down, up

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        h = self.base.dropout(self.base.dense(hidden_states))
        ln = self.base.LayerNorm
        return ln(h + self.up(torch.relu(self.down(ln(h + input_tensor)))) + input_tensor)


@pytest.mark.parametrize("family", sorted(TEXT_MODELS))
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train-dropout"])
def test_d1_equals_reference_pfeiffer(float64, family: str, train: bool) -> None:
    base = TEXT_MODELS[family](dropout=0.1 if train else 0.0).double()
    ours = capaboost.apply(copy.deepcopy(base), CapaBoostConfig(method="padapter", d=1, density=1.0,
                                                                reduction_factor=4))
    ref = copy.deepcopy(base)
    pairs = []
    g = torch.Generator().manual_seed(0)
    for name, module in ours.named_modules():
        if isinstance(module, PfeifferOutput):
            a = module.adapter
            assert (a.down_weight.shape, a.up_weight.shape) == ((8, 32), (32, 8))  # hidden 32 // 4
            down, up = nn.Linear(32, 8), nn.Linear(8, 32)
            with torch.no_grad():
                for mine, theirs in [(a.down_weight, down.weight), (a.down_bias, down.bias),
                                     (a.up_weight, up.weight), (a.up_bias, up.bias)]:
                    value = torch.randn(mine.shape, generator=g) * 0.3
                    mine.copy_(value)
                    theirs.copy_(value)
            parent, _, child = name.rpartition(".")
            setattr(ref.get_submodule(parent), child, RefPfeiffer(ref.get_submodule(name), down, up))
            pairs.append((a, down, up))
    assert len(pairs) == 2  # one adapter per layer, after the FFN output only
    y_ours, y_ref = logits_pair(ours, ref, train, seed=5)
    torch.testing.assert_close(y_ours, y_ref, atol=1e-6, rtol=0)
    with torch.no_grad():
        assert (y_ours - base.eval()(**batch()).logits).abs().max() > 1e-3
    w = torch.randn(y_ours.shape, generator=g)
    (y_ours * w).sum().backward()
    (y_ref * w).sum().backward()
    for a, down, up in pairs:
        for mine, theirs in [(a.down_weight, down.weight), (a.down_bias, down.bias),
                             (a.up_weight, up.weight), (a.up_bias, up.bias)]:
            torch.testing.assert_close(mine.grad, theirs.grad, atol=1e-6, rtol=0)


def test_one_step_changes_only_peft_and_head() -> None:
    model = capaboost.apply(tiny_roberta(), CapaBoostConfig(method="padapter", d=2, density=0.5,
                                                            reduction_factor=4))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".adapter." in n or n.startswith("classifier.") for n in trainable)
    assert any(n.startswith("classifier.") for n in trainable)
    assert one_step_changes(model) == trainable


def test_effective_count_is_mask_union() -> None:
    cfg = CapaBoostConfig(method="padapter", d=2, density=0.5, reduction_factor=4, seed=3)
    model = capaboost.apply(tiny_roberta(), cfg)
    counts = capaboost.count_parameters(model)
    # recomputed here from the masks as numpy arrays: union per weight, biases and head in full
    head = sum(p.numel() for n, p in model.named_parameters() if n.startswith("classifier."))
    union = biases = 0
    for module in model.modules():
        if isinstance(module, MaskedBottleneck):
            for mask in (module.mask_down.numpy(), module.mask_up.numpy()):
                union += int((mask[0] | mask[1]).sum())
            biases += module.down_bias.numel() + module.up_bias.numel()
    adapter_dense = 2 * (32 * 8 + 8 + 8 * 32 + 32)
    assert counts["trainable"] == adapter_dense + head
    assert counts["effective"] == union + biases + head
    assert counts["effective"] < counts["trainable"]
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    # the union is about 1 - (1 - 0.5)^2 = 75% of the masked weights
    assert abs(union / (2 * 2 * 32 * 8) - 0.75) < 0.06
    # d=1, density=1: everything trainable is effective
    vanilla = capaboost.count_parameters(capaboost.apply(tiny_roberta(), CapaBoostConfig(
        method="padapter", d=1, density=1.0, reduction_factor=4)))
    assert vanilla["effective"] == vanilla["trainable"] == counts["trainable"]
