"""CapaBoost-LoRA on decoders (Llama, GPT-2's fused Conv1D c_attn) against PEFT LoRA and a reference
written here: outputs, gradients, merge, export_peft, masks rebuilt in another process."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import capaboost
from capaboost import CapaBoostConfig
from tests.capaboost.test_lora import ReferenceQV
from tests.capaboost.tiny import decoder_batch, labels, lora_layers, randomize_lora_B, tiny_gpt2, tiny_llama

ROOT = Path(__file__).resolve().parents[2]
HIDDEN = 32


def _logits(model: nn.Module) -> torch.Tensor:
    return model(**decoder_batch()).logits


def _score_and_lora(model: nn.Module) -> list[torch.Tensor]:
    return [p for n, p in sorted(model.named_parameters()) if p.requires_grad]


@pytest.mark.parametrize("backbone", ["llama", "qwen2", "mistral", "gpt2"])
def test_default_targets_and_head(backbone: str) -> None:
    """Llama-family defaults are PEFT's own (q_proj, v_proj); GPT-2 adapts c_attn's q and v slices."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS

    bb = capaboost.backbones.BACKBONES[backbone]
    assert bb.decoder and bb.heads == ("score",) and bb.methods == ("lora",)
    if backbone == "gpt2":
        assert PEFT_TARGETS["gpt2"] == ["c_attn"] and bb.fused_qkv == "c_attn"
    else:
        assert list(bb.lora_targets) == PEFT_TARGETS[backbone]


@pytest.mark.parametrize("build, targets", [(tiny_llama, ("q_proj", "v_proj")), (tiny_gpt2, ("c_attn",))],
                         ids=["llama", "gpt2-whole-c_attn"])
def test_d1_equals_peft_lora(float64, build, targets) -> None:
    """d=1, density=1: PEFT's get_peft_model with the same r, alpha, targets and weights gives the same
    logits and the same gradients (LoRA factors and the score head). GPT-2: PEFT's fan_in_fan_out."""
    from peft import LoraConfig, get_peft_model

    base = build().double()
    ours = capaboost.apply(copy.deepcopy(base), CapaBoostConfig(d=1, density=1.0, r=4, alpha=12,
                                                                target_modules=targets))
    theirs = get_peft_model(copy.deepcopy(base), LoraConfig(
        r=4, lora_alpha=12, target_modules=list(targets), modules_to_save=["score"],
        fan_in_fan_out=build is tiny_gpt2))
    g = torch.Generator().manual_seed(0)
    pairs = []
    for name, layer in sorted(lora_layers(ours).items()):
        peft_layer = theirs.get_submodule("base_model.model." + name)
        for mine, their in [(layer.lora_A, peft_layer.lora_A["default"].weight),
                            (layer.lora_B, peft_layer.lora_B["default"].weight)]:
            with torch.no_grad():
                value = torch.randn(mine.shape, generator=g) * 0.2
                mine.copy_(value)
                their.copy_(value)
            pairs.append((mine, their))
    assert len(pairs) == 4 * (2 if build is tiny_llama else 1)
    head = theirs.base_model.model.score.modules_to_save["default"].weight
    pairs.append((ours.score.weight, head))
    y, y_peft = _logits(ours), _logits(theirs)
    assert (y - _logits(base)).abs().max() > 1e-3  # the adapters matter
    torch.testing.assert_close(y, y_peft, atol=1e-10, rtol=0)
    F.cross_entropy(y, labels()).backward()
    F.cross_entropy(y_peft, labels()).backward()
    for mine, their in pairs:
        assert mine.grad.abs().max() > 0
        torch.testing.assert_close(mine.grad, their.grad, atol=1e-10, rtol=0)
    assert {id(p) for p in _score_and_lora(ours)} == {id(p) for p, _ in pairs}


def test_gpt2_qv_d1_equals_block_peft_lora(float64) -> None:
    """GPT-2's default (q and v slices of c_attn, d=1) is a PEFT LoRA on the whole c_attn of rank 2r whose
    A stacks [A_q; A_v] and whose B holds B_q in q's rows, B_v in v's rows, zeros elsewhere."""
    from peft import LoraConfig, get_peft_model

    base = tiny_gpt2().double()
    ours = capaboost.apply(copy.deepcopy(base), CapaBoostConfig(d=1, density=1.0, r=4, alpha=12))
    randomize_lora_B(ours)
    theirs = get_peft_model(copy.deepcopy(base), LoraConfig(
        r=8, lora_alpha=24, target_modules=["c_attn"], fan_in_fan_out=True))
    blocks = []
    for block in ours.transformer.h:
        v, q = block.attn.c_attn, block.attn.c_attn.base_layer
        assert (q.rows, v.rows) == ((0, HIDDEN), (2 * HIDDEN, 3 * HIDDEN))
        peft_layer = theirs.base_model.model.transformer.h[len(blocks)].attn.c_attn
        a, b = peft_layer.lora_A["default"].weight, peft_layer.lora_B["default"].weight
        with torch.no_grad():
            a.copy_(torch.cat([q.lora_A, v.lora_A]))
            b.zero_()
            b[:HIDDEN, :4], b[2 * HIDDEN:, 4:] = q.lora_B, v.lora_B
        blocks.append((q, v, a, b))
    theirs.base_model.model.score.weight.data.copy_(ours.score.weight)
    y, y_peft = _logits(ours), _logits(theirs)
    torch.testing.assert_close(y, y_peft, atol=1e-10, rtol=0)
    y.pow(2).sum().backward()
    y_peft.pow(2).sum().backward()
    for q, v, a, b in blocks:
        torch.testing.assert_close(torch.cat([q.lora_A.grad, v.lora_A.grad]), a.grad, atol=1e-10, rtol=0)
        torch.testing.assert_close(q.lora_B.grad, b.grad[:HIDDEN, :4], atol=1e-10, rtol=0)
        torch.testing.assert_close(v.lora_B.grad, b.grad[2 * HIDDEN:, 4:], atol=1e-10, rtol=0)


def test_gpt2_qv_equals_reference(float64) -> None:
    """d=2 masked q and v branches on the Conv1D c_attn equal the explicit per-branch reference."""
    base = tiny_gpt2().double()
    ours = capaboost.apply(copy.deepcopy(base), CapaBoostConfig(d=2, density=0.5, r=4, alpha=8))
    randomize_lora_B(ours)
    ref, params = copy.deepcopy(base), []
    for block_ours, block_ref in zip(ours.transformer.h, ref.transformer.h, strict=True):
        v, q = block_ours.attn.c_attn, block_ours.attn.c_attn.base_layer
        block_ref.attn.c_attn = ReferenceQV(block_ref.attn.c_attn, q, v)
        params += [q.lora_A, q.lora_B, v.lora_A, v.lora_B]
    ref.score = ours.score
    y = _logits(ours)
    torch.testing.assert_close(y, _logits(ref), atol=1e-10, rtol=0)
    grads = torch.autograd.grad(y.pow(2).sum(), params)
    for g, h in zip(grads, torch.autograd.grad(_logits(ref).pow(2).sum(), params), strict=True):
        assert g.abs().max() > 0
        torch.testing.assert_close(g, h, atol=1e-10, rtol=0)


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2-qv"])
def test_merge_and_unload(build) -> None:
    """Merging folds delta W into the base weight in its own layout (Conv1D: [in, out], k columns
    untouched); merge_and_unload leaves exactly the backbone's module types."""
    model = capaboost.apply(build(), CapaBoostConfig(d=2, density=0.5, r=4, alpha=8))
    randomize_lora_B(model)
    with torch.no_grad():
        expected = _logits(model)
        if build is tiny_gpt2:
            before = model.transformer.h[0].attn.c_attn.weight.clone()
            delta = capaboost.merge(copy.deepcopy(model)).transformer.h[0].attn.c_attn.weight - before
            assert delta.shape == (HIDDEN, 3 * HIDDEN)
            assert delta[:, HIDDEN:2 * HIDDEN].abs().max() == 0 and delta[:, :HIDDEN].abs().max() > 0
        merged = _logits(capaboost.merge(copy.deepcopy(model)))
        plain = capaboost.merge_and_unload(model)
        got = _logits(plain)
    reference = build()
    assert [(n, type(m)) for n, m in plain.named_modules()] == \
        [(n, type(m)) for n, m in reference.named_modules()]
    torch.testing.assert_close(merged, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2-qv"])
def test_export_peft_roundtrip(tmp_path: Path, build) -> None:
    """Trained d=2 CapaBoost-LoRA -> stock PEFT dir -> PeftModel.from_pretrained on a fresh backbone:
    our logits (the score head travels as modules_to_save)."""
    from peft import PeftModel

    model = capaboost.apply(build(), CapaBoostConfig(d=2, density=0.5, r=4, alpha=8))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for step in range(3):
        F.cross_entropy(model(**decoder_batch(seed=step)).logits, labels(seed=step)).backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    with torch.no_grad():
        expected = _logits(model)
    capaboost.export_peft(model, tmp_path / "peft")
    loaded = PeftModel.from_pretrained(build(), str(tmp_path / "peft")).eval()
    with torch.no_grad():
        got = _logits(loaded)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
        assert (got - _logits(build())).abs().max() > 1e-4


def test_masks_identical_in_another_process() -> None:
    """A fresh interpreter (other hash seed, other global RNG) draws the same masks on both decoders."""
    cfg = CapaBoostConfig(d=3, density=0.5, r=4, mask_seed=7)
    here = [capaboost.mask_digest(capaboost.apply(build(), cfg)) for build in (tiny_llama, tiny_gpt2)]
    code = ("import torch, capaboost; from tests.capaboost.tiny import tiny_llama, tiny_gpt2\n"
            "torch.manual_seed(5); torch.rand(3)\n"
            "cfg = capaboost.CapaBoostConfig(d=3, density=0.5, r=4, mask_seed=7)\n"
            "print(*[capaboost.mask_digest(capaboost.apply(b(seed=4), cfg))\n"
            "        for b in (tiny_llama, tiny_gpt2)])")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "11"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True,
                         text=True).stdout.split()
    assert out == here and here[0] != here[1]
    other = capaboost.mask_digest(capaboost.apply(tiny_llama(), CapaBoostConfig(d=3, density=0.5, r=4,
                                                                                mask_seed=8)))
    assert other != here[0]


@pytest.mark.parametrize("method", ["padapter", "prefix"])
def test_other_methods_refused_on_decoders(method: str) -> None:
    with pytest.raises(ValueError, match=f"method='{method}' is not supported on backbone 'llama'"):
        capaboost.apply(tiny_llama(), CapaBoostConfig(method=method, d=2, density=0.5))
