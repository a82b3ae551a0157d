"""apply / merge / unmerge / count_parameters on whole models of every family."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import capaboost
from capaboost import CapaBoostConfig, LoRALinear, MaskedBottleneck
from tests.capaboost import tiny
from tests.capaboost.tiny import batch, images, labels, logits, lora_layers, tiny_roberta

FAMILIES = {  # builder, inputs, LoRA target suffixes, head modules
    "roberta": (tiny_roberta, batch, ("query", "value"), ("classifier",)),
    "bert": (tiny.tiny_bert, batch, ("query", "value"), ("classifier",)),
    "deberta-v2": (tiny.tiny_deberta, batch, ("query_proj", "value_proj"), ("classifier", "pooler")),
    # q and v of the fused qkv: v's LoRA wraps q's, which wraps the Linear (qkv, qkv.base_layer)
    "timm-vit": (tiny.tiny_vit, images, ("qkv", "base_layer"), ("head",)),
}


def _train(model: nn.Module, inputs, steps: int = 3) -> None:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for step in range(steps):
        F.cross_entropy(logits(model, inputs), labels(seed=step, n=len(logits(model, inputs)))).backward()
        opt.step()
        opt.zero_grad()
    model.eval()


# ---------------------------------------------------------------- 10. backbones
@pytest.mark.parametrize("method", ["lora", "padapter"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_forward_backward(family: str, method: str) -> None:
    build, make_inputs, targets, heads = FAMILIES[family]
    cfg = CapaBoostConfig(method=method, d=2, density=0.5, r=4, reduction_factor=4)
    model = capaboost.apply(build(), cfg)
    assert capaboost.backbones.detect(model).name == family
    peft = capaboost.peft_modules(model)
    kind = LoRALinear if method == "lora" else MaskedBottleneck
    assert len(peft) == (2 * len(targets) if method == "lora" else 2) and all(isinstance(m, kind)
                                                                                for m in peft.values())
    if method == "lora":
        assert all(n.rsplit(".", 1)[-1] in targets for n in peft)
    peft_params = {id(p) for m in peft.values() for p in m.parameters() if p.requires_grad}
    head_params = {id(p) for h in heads for p in model.get_submodule(h).parameters()}
    assert head_params and all(p.requires_grad for p in model.parameters() if id(p) in head_params)
    for n, p in model.named_parameters():  # backbone frozen: exactly PEFT + head train
        assert p.requires_grad == (id(p) in peft_params or id(p) in head_params), n
    inputs = make_inputs()
    model.train()
    out = logits(model, inputs)
    assert out.shape == (len(out), 3) and torch.isfinite(out).all()
    F.cross_entropy(out, labels(n=len(out))).backward()
    for n, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, n
    assert all(p.grad.abs().sum() > 0 for m in peft.values() for p in m.parameters() if p.grad is not None
               and p.dim() > 1 and (method == "padapter" or p is m.lora_B))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
@pytest.mark.parametrize("method", ["lora", "padapter"])
def test_non_float32_backbone(method: str, dtype: torch.dtype) -> None:
    """PEFT weights stay float32 inside a bf16 / fp64 backbone (as PEFT does); outputs keep the
    backbone's dtype. Regression: the adapter used to fail with a dtype mismatch."""
    model = capaboost.apply(tiny_roberta().to(dtype), CapaBoostConfig(method=method, reduction_factor=4))
    out = model(**batch()).logits
    assert out.dtype == dtype
    out.float().sum().backward()
    peft = [p for m in capaboost.peft_modules(model).values() for p in m.parameters() if p.requires_grad]
    assert peft and all(p.dtype == torch.float32 and p.grad is not None for p in peft)


def test_apply_records_resolved_config() -> None:
    model = capaboost.apply(tiny.tiny_deberta(), CapaBoostConfig())
    cfg = model.capaboost_config
    assert cfg.target_modules == ("query_proj", "value_proj") and set(cfg.modules_to_save) == {"classifier",
                                                                                               "pooler"}
    custom = capaboost.apply(tiny_roberta(), CapaBoostConfig(target_modules=("dense",), modules_to_save=()))
    names = set(lora_layers(custom))
    assert "classifier.dense" in names and "roberta.encoder.layer.0.output.dense" in names
    assert not any(p.requires_grad for n, p in custom.named_parameters() if "lora_" not in n)


def test_modules_to_save_takes_dotted_paths_and_refuses_absent_ones() -> None:
    """BERT's pooler is not a top-level child; a named head that is not there must not stay frozen."""
    model = capaboost.apply(tiny.tiny_bert(), CapaBoostConfig(modules_to_save=("classifier", "bert.pooler")))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n}
    assert trainable == {"classifier.weight", "classifier.bias", "bert.pooler.dense.weight",
                         "bert.pooler.dense.bias"}
    with pytest.raises(ValueError, match=r"\['pooler'\] not found"):
        capaboost.apply(tiny.tiny_bert(), CapaBoostConfig(modules_to_save=("classifier", "pooler")))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", ["lora", "padapter", "prefix"])
def test_apply_on_cuda(method: str) -> None:
    model = capaboost.apply(tiny_roberta().cuda(), CapaBoostConfig(method=method, prefix_length=4,
                                                                   prefix_hidden=16))
    assert all(t.is_cuda for t in list(model.parameters()) + list(model.buffers()))
    model(**{k: v.cuda() for k, v in batch().items()}).logits.sum().backward()


# ---------------------------------------------------------------- 6. merge
@pytest.mark.parametrize("family", ["roberta", "timm-vit"])
def test_merge_unmerge_trained(family: str) -> None:
    build, make_inputs, _, _ = FAMILIES[family]
    base = build()
    fused = ("qkv",) if family == "timm-vit" else None  # ViT's q/v default: tests/capaboost/test_lora.py
    model = capaboost.apply(copy.deepcopy(base), CapaBoostConfig(d=2, density=0.5, r=4, alpha=8, dropout=0.1,
                                                                 target_modules=fused))
    inputs = make_inputs()
    _train(model, inputs)
    layers = lora_layers(model)
    assert all(layer.lora_B.abs().max() > 0 for layer in layers.values())  # trained: B != 0
    w0 = {n: layer.base_layer.weight.detach().clone() for n, layer in layers.items()}
    with torch.no_grad():
        plain = logits(model, inputs)
        capaboost.merge(model)
        merged = logits(model, inputs)
        capaboost.merge(model)  # idempotent
        merged_twice = logits(model, inputs)
        for n, layer in layers.items():  # base weight == W0 + s * sum_i (B*MB_i)(A*MA_i), computed here
            delta = sum((layer.lora_B * layer.mask_B[i]) @ (layer.lora_A * layer.mask_A[i]) for i in range(2))
            expected = w0[n] + layer.scaling * delta
            torch.testing.assert_close(layer.base_layer.weight, expected, atol=1e-6, rtol=0)
        capaboost.unmerge(model)
        unmerged = logits(model, inputs)
        reference = logits(base, inputs)
    for n, layer in layers.items():
        torch.testing.assert_close(layer.base_layer.weight, w0[n], atol=1e-6, rtol=0)
    for other in (merged, merged_twice, unmerged):
        torch.testing.assert_close(other, plain, atol=1e-5, rtol=0)
    assert (plain - reference).abs().max() > 1e-3


@pytest.mark.parametrize("model", [tiny_roberta, lambda: capaboost.apply(tiny_roberta(), CapaBoostConfig(
    method="padapter", reduction_factor=4))], ids=["plain", "padapter"])
def test_merge_without_lora_raises(model) -> None:
    m = model()
    for fn in (capaboost.merge, capaboost.unmerge):
        with pytest.raises(ValueError, match="lora"):
            fn(m)


# ---------------------------------------------------------------- count_parameters
def test_count_parameters_lora() -> None:
    model = capaboost.apply(tiny_roberta(), CapaBoostConfig(d=2, density=0.5, r=4))
    counts = capaboost.count_parameters(model)
    head = 32 * 32 + 32 + 3 * 32 + 3
    lora_dense = 4 * (4 * 32 + 32 * 4)
    union = sum(int((m[0] | m[1]).sum()) for layer in lora_layers(model).values()
                for m in (layer.mask_A.numpy(), layer.mask_B.numpy()))
    assert counts["trainable"] == lora_dense + head
    assert counts["effective"] == union + head
    assert counts["total"] == sum(p.numel() for p in tiny_roberta().parameters()) + lora_dense
    assert 0.65 < union / lora_dense < 0.85  # ~ 1 - (1 - 0.5)^2
    vanilla = capaboost.count_parameters(capaboost.apply(tiny_roberta(),
                                                         CapaBoostConfig(d=1, density=1.0, r=4)))
    assert vanilla["trainable"] == vanilla["effective"] == counts["trainable"]
    same = capaboost.count_parameters(capaboost.apply(tiny_roberta(), CapaBoostConfig(d=4, mask="same", r=4)))
    assert same["effective"] == lora_dense // 2 + head  # one mask: exactly half of each LoRA tensor


def test_count_parameters_plain_model() -> None:
    model = tiny_roberta()
    n = sum(p.numel() for p in model.parameters())
    assert capaboost.count_parameters(model) == {"trainable": n, "effective": n, "peft": 0, "total": n}


# ---------------------------------------------------------------- the peft count (heads excluded)
def test_peft_count_by_hand() -> None:
    """LoRA r on q and v: r*(in+out) per matrix, 2 matrices per layer; with d=2 at density 0.5 the
    union of the masks, counted here, ~ 0.75 of it. RoBERTa-base r=8: 2*8*(768+768)*12 = 294,912."""
    h, layers, r = 32, 2, 4
    vanilla = capaboost.apply(tiny_roberta(), CapaBoostConfig(d=1, density=1.0, r=r))
    assert capaboost.count_parameters(vanilla)["peft"] == 2 * r * (h + h) * layers
    model = capaboost.apply(tiny_roberta(), CapaBoostConfig(d=2, density=0.5, r=r))
    union = sum(int((m[0] | m[1]).sum()) for layer in lora_layers(model).values()
                for m in (layer.mask_A.numpy(), layer.mask_B.numpy()))
    counts = capaboost.count_parameters(model)
    assert counts["peft"] == union == counts["effective"] - (h * h + h + 3 * h + 3)  # head excluded
    assert abs(union / (2 * r * (h + h) * layers) - 0.75) < 0.08


def test_peft_count_padapter_and_vit_qv() -> None:
    h, width = 32, 32 // 4
    model = capaboost.apply(tiny_roberta(), CapaBoostConfig(method="padapter", d=3, density=0.5,
                                                            reduction_factor=4))
    union = sum(int(m.any(0).sum()) for a in capaboost.peft_modules(model).values()
                for m in (a.mask_down, a.mask_up))
    assert capaboost.count_parameters(model)["peft"] == union + 2 * (width + h)  # + unmasked biases
    vit = capaboost.apply(tiny.tiny_vit(), CapaBoostConfig(d=1, density=1.0, r=4))
    assert capaboost.count_parameters(vit)["peft"] == 2 * 2 * 4 * (h + h)  # q, v: r*(in+out) each, 2 blocks
