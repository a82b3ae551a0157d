"""trainer.clip=official against the authors' clipping written out: d physical copies of every CapaBoost
weight, each holding the summed masked gradient, then torch's clip_grad_norm_ over all parameters
(LINs-lab/CapaBoost a0d9963, src/transformers/trainer.py lines 1797-1843)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import capaboost
from tasks.training.clipping import OfficialClip, clip_official, copies


def _model(d: int) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("query", nn.Linear(16, 16))
    model.add_module("classifier", nn.Linear(16, 3))
    cfg = capaboost.CapaBoostConfig(method="lora", d=d, density=0.5, r=4, alpha=8, init="official",
                                    target_modules=("query",), modules_to_save=("classifier",))
    model = capaboost.apply(model, cfg)
    with torch.no_grad():
        for layer in capaboost.peft_modules(model).values():
            layer.lora_B.normal_(0, 0.5)
    return model


def _backward(model: nn.Module, scale: float) -> list[nn.Parameter]:
    x = torch.randn(8, 16, generator=torch.Generator().manual_seed(1))
    loss = scale * model(x).pow(2).sum()
    loss.backward()
    return [p for p in model.parameters() if p.requires_grad]


@pytest.mark.parametrize("d, scale", [(2, 100.0), (4, 100.0), (2, 1e-4)], ids=["d2-active", "d4-active",
                                                                             "inactive"])
def test_official_clip_equals_the_authors_d_copies(d: int, scale: float) -> None:
    model = _model(d)
    params = _backward(model, scale)
    d_of = copies(model)
    assert sorted(set(d_of.values())) == [d] and len(d_of) == 2  # A and B of the one LoRA layer
    # theirs: every CapaBoost weight is d tensors that each hold the summed gradient (restore + aggregate)
    theirs = [p.grad.clone() for p in params for _ in range(d_of.get(id(p), 1))]
    holders = [nn.Parameter(torch.zeros_like(g)) for g in theirs]
    for h, g in zip(holders, theirs, strict=True):
        h.grad = g
    their_norm = nn.utils.clip_grad_norm_(holders, 1.0)
    expected = iter(h.grad for h in holders)
    want = []
    for p in params:
        copies_p = [next(expected) for _ in range(d_of.get(id(p), 1))]
        assert all(torch.equal(c, copies_p[0]) for c in copies_p)  # the copies stay equal
        want.append(copies_p[0])
    true_norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in params))
    norm = clip_official(params, d_of, 1.0)
    torch.testing.assert_close(norm, their_norm)
    for p, w in zip(params, want, strict=True):
        torch.testing.assert_close(p.grad, w)
    if scale > 1:  # active: the official norm is larger than the true one, and clipping is stronger
        assert their_norm > true_norm * 1.01 and their_norm < true_norm * d ** 0.5
    else:  # inactive: gradients untouched
        assert their_norm < 1.0


def test_d1_official_clip_is_torch_clip() -> None:
    model = _model(1)
    params = _backward(model, 100.0)
    ref = [p.grad.clone() for p in params]
    holders = [nn.Parameter(torch.zeros_like(g)) for g in ref]
    for h, g in zip(holders, ref, strict=True):
        h.grad = g
    nn.utils.clip_grad_norm_(holders, 0.5)
    OfficialClip(model, 0.5).on_pre_optimizer_step(None, None, None)
    for p, h in zip(params, holders, strict=True):
        torch.testing.assert_close(p.grad, h.grad)
