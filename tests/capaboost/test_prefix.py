"""CapaBoost prefix tuning: d=1 is PEFT's own prefix tuning (prefix_projection=True) at the token
positions of the model without a prefix; d>1 swaps PEFT's reparameterisation MLP for d masked,
summed branches and nothing else."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import capaboost
from capaboost import CapaBoostConfig
from tests.capaboost.tiny import (
    TEXT_MODELS,
    batch,
    logits_pair,
    one_step_changes,
    tiny_roberta,
)

LENGTH, WIDTH = 4, 16


def _peft_prefix(base: nn.Module) -> nn.Module:
    from peft import PrefixTuningConfig, get_peft_model

    return get_peft_model(copy.deepcopy(base), PrefixTuningConfig(
        task_type="SEQ_CLS", num_virtual_tokens=LENGTH, prefix_projection=True, encoder_hidden_size=WIDTH))


class LoopTransform(nn.Module):
    """Reference CapaBoost MLP: sum_i up_i(tanh(down_i(x))) over d explicit branches."""

    def __init__(self, down: nn.Linear, up: nn.Linear, mask_down: torch.Tensor,
                 mask_up: torch.Tensor) -> None:
        super().__init__()
        self.down, self.up, self.mask_down, self.mask_up = down, up, mask_down, mask_up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(F.linear(torch.tanh(F.linear(x, self.down.weight * md, self.down.bias)),
                            self.up.weight * mu, self.up.bias) for md, mu in zip(self.mask_down, self.mask_up,
                                                                                  strict=True))


def unshifted_positions(family: str, input_ids: torch.Tensor) -> torch.Tensor:
    """By hand: RoBERTa numbers tokens from padding_idx + 1 = 2, BERT from 0 (no pad ids in batch())."""
    assert not (input_ids == 1).any()
    start = 2 if family == "roberta" else 0
    return (torch.arange(input_ids.shape[1]) + start).expand_as(input_ids)


class AtPositions(nn.Module):
    """Reference: PEFT's prompt encoder makes the past keys/values, and the plain transformers model
    gets them with the positions of the model without a prefix spelled out (PEFT's own forward drops
    ``position_ids`` for prompt learning, and its route shifts them by the prefix length)."""

    def __init__(self, model: nn.Module, family: str) -> None:
        super().__init__()
        self.model, self.family = model, family

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        n = len(input_ids)
        mask = torch.cat([torch.ones(n, LENGTH, dtype=attention_mask.dtype), attention_mask], dim=1)
        return self.model.base_model(input_ids=input_ids, attention_mask=mask,
                                     past_key_values=self.model.get_prompt(batch_size=n),
                                     position_ids=unshifted_positions(self.family, input_ids))


def _pair(family: str, d: int, density: float, dropout: float = 0.0):
    """Ours and PEFT's prefix model from one backbone, with the same random trainable weights."""
    base = TEXT_MODELS[family](dropout=dropout).double()
    ours = capaboost.apply(copy.deepcopy(base), CapaBoostConfig(method="prefix", d=d, density=density,
                                                                prefix_length=LENGTH, prefix_hidden=WIDTH))
    theirs = _peft_prefix(base)
    mine, their = ours.prompt_encoder["default"], theirs.prompt_encoder["default"]
    t = mine.transform
    down, _, up = their.transform
    g = torch.Generator().manual_seed(0)
    pairs = [(mine.embedding.weight, their.embedding.weight), (t.down_weight, down.weight),
             (t.down_bias, down.bias), (t.up_weight, up.weight), (t.up_bias, up.bias)]
    heads = dict(theirs.named_parameters())
    pairs += [(p, heads[n]) for n, p in ours.named_parameters() if "modules_to_save" in n]
    assert len(pairs) == 5 + (4 if family == "roberta" else 2)  # embedding, MLP, head (weights + biases)
    with torch.no_grad():
        for a, b in pairs:
            value = torch.randn(a.shape, generator=g) * 0.3
            a.copy_(value)
            b.copy_(value)
    if d > 1:
        their.transform = LoopTransform(down, up, t.mask_down, t.mask_up)
    return ours, AtPositions(theirs, family), pairs


@pytest.mark.parametrize("family", ["roberta", "bert"])
@pytest.mark.parametrize("d, density, train",
                         [(1, 1.0, False), (1, 1.0, True), (2, 0.5, False), (3, 0.3, True)],
                         ids=["vanilla-eval", "vanilla-train", "d2", "d3-train"])
def test_prefix_equals_reference(float64, family: str, d: int, density: float, train: bool) -> None:
    ours, theirs, pairs = _pair(family, d, density, dropout=0.1 if train else 0.0)
    y_ours, y_theirs = logits_pair(ours, theirs, train, seed=3)
    torch.testing.assert_close(y_ours, y_theirs, atol=1e-6, rtol=0)
    w = torch.randn(y_ours.shape, generator=torch.Generator().manual_seed(1))
    (y_ours * w).sum().backward()
    (y_theirs * w).sum().backward()
    for a, b in pairs:
        assert a.grad is not None and a.grad.abs().max() > 0
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=0)


def test_prefix_changes_outputs() -> None:
    base = tiny_roberta()
    model = capaboost.apply(copy.deepcopy(base), CapaBoostConfig(method="prefix", prefix_length=LENGTH,
                                                                 prefix_hidden=WIDTH))
    with torch.no_grad():
        assert (model(**batch()).logits - base(**batch()).logits).abs().max() > 1e-4


def test_one_step_changes_only_prefix_and_head() -> None:
    model = capaboost.apply(tiny_roberta(), CapaBoostConfig(method="prefix", d=2, density=0.5,
                                                            prefix_length=LENGTH, prefix_hidden=WIDTH))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("prompt_encoder.") or ".modules_to_save." in n for n in trainable)
    assert any(".modules_to_save." in n for n in trainable)
    assert one_step_changes(model) == trainable


def test_effective_count() -> None:
    model = capaboost.apply(tiny_roberta(), CapaBoostConfig(method="prefix", d=2, density=0.5,
                                                            prefix_length=LENGTH, prefix_hidden=WIDTH))
    t = model.prompt_encoder["default"].transform
    union = sum(int((m.numpy()[0] | m.numpy()[1]).sum()) for m in (t.mask_down, t.mask_up))
    head = 32 * 32 + 32 + 3 * 32 + 3
    embedding = LENGTH * 32
    mlp_dense = 32 * WIDTH + WIDTH + WIDTH * (2 * 2 * 32) + 2 * 2 * 32
    counts = capaboost.count_parameters(model)
    assert counts["trainable"] == embedding + mlp_dense + head
    assert counts["effective"] == union + embedding + WIDTH + 2 * 2 * 32 + head
    assert counts["effective"] < counts["trainable"]


def _recorded_positions(model: nn.Module) -> list[torch.Tensor]:
    """The position ids every position-embedding lookup of one forward pass received."""
    seen = []
    table = next(m for n, m in model.named_modules() if n.endswith("embeddings.position_embeddings"))
    handle = table.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    with torch.no_grad():
        model(**batch())
    handle.remove()
    return seen


@pytest.mark.parametrize("family", ["roberta", "bert"])
def test_prefix_keeps_token_positions(family: str) -> None:
    """With a 16-token prefix, PEFT's route alone gave RoBERTa positions 18.. instead of 2..."""
    base = TEXT_MODELS[family]()
    ours = capaboost.apply(copy.deepcopy(base), CapaBoostConfig(method="prefix", prefix_length=16,
                                                                prefix_hidden=WIDTH))
    expected = unshifted_positions(family, batch()["input_ids"])
    for seen in (_recorded_positions(ours), _recorded_positions(base)):
        assert len(seen) == 1 and torch.equal(seen[0].expand_as(expected), expected)
    peft_alone = _recorded_positions(_peft_prefix(base))  # the bug this guards against
    assert int(peft_alone[0].min()) == int(expected.min()) + LENGTH


def test_prefix_inference_size_and_peft_count() -> None:
    """Inference needs prefix_length x 2 x layers x hidden keys/values; the MLP is training-only.
    The peft count is the prefix embedding + the MLP's kept entries, the head excluded."""
    model = capaboost.apply(tiny_roberta(), CapaBoostConfig(method="prefix", d=2, density=0.5,
                                                            prefix_length=LENGTH, prefix_hidden=WIDTH))
    t = model.prompt_encoder["default"].transform
    union = sum(int((m.numpy()[0] | m.numpy()[1]).sum()) for m in (t.mask_down, t.mask_up))
    counts = capaboost.count_parameters(model)
    assert counts["prefix_inference"] == LENGTH * 2 * 2 * 32
    assert counts["peft"] == LENGTH * 32 + union + WIDTH + 2 * 2 * 32
    lora = capaboost.apply(tiny_roberta(), CapaBoostConfig())
    assert "prefix_inference" not in capaboost.count_parameters(lora)
