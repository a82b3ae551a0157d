"""CapaBoost-LoRA against independent oracles: PEFT LoRA (d=1), an explicit loop over the d
branches, and the official "d copies, mask and sum the grads, re-mask" training loop."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import capaboost
from capaboost import CapaBoostConfig, LoRALinear
from capaboost.masks import make_masks
from tests.capaboost.tiny import (
    batch,
    labels,
    logits_pair,
    lora_layers,
    randomize_lora_B,
    tiny_roberta,
    tiny_vit,
)


# ---------------------------------------------------------------- 1. d=1, density=1 is PEFT LoRA
@pytest.mark.parametrize("dropout, train", [(0.0, False), (0.0, True), (0.1, True)],
                         ids=["eval", "train", "train-dropout"])
def test_d1_equals_peft_lora(float64, dropout: float, train: bool) -> None:
    """Same logits and LoRA gradients as peft.get_peft_model with the same weights. With dropout the
    same torch seed gives the same dropout masks: our d=1 branch consumes the RNG like PEFT's."""
    from peft import LoraConfig, get_peft_model

    base = tiny_roberta(dropout=dropout).double()
    ours = capaboost.apply(copy.deepcopy(base), CapaBoostConfig(
        d=1, density=1.0, r=4, alpha=12, dropout=dropout, target_modules=("query", "key", "value")))
    theirs = get_peft_model(copy.deepcopy(base), LoraConfig(
        r=4, lora_alpha=12, lora_dropout=dropout, target_modules=["query", "key", "value"]))
    g = torch.Generator().manual_seed(0)
    pairs = []
    for name, layer in sorted(lora_layers(ours).items()):
        peft_layer = theirs.get_submodule("base_model.model." + name)
        with torch.no_grad():
            for mine, their in [(layer.lora_A, peft_layer.lora_A["default"].weight),
                                (layer.lora_B, peft_layer.lora_B["default"].weight)]:
                assert mine.shape == their.shape
                value = torch.randn(mine.shape, generator=g) * 0.2
                mine.copy_(value)
                their.copy_(value)
        pairs.append((layer, peft_layer))
    assert len(pairs) == 6
    y_ours, y_theirs = logits_pair(ours, theirs, train, seed=123)
    y_base = base(**batch()).logits
    assert (y_ours - y_base).abs().max() > 1e-3  # the adapters matter
    torch.testing.assert_close(y_ours, y_theirs, atol=1e-6, rtol=0)
    w = torch.randn(y_ours.shape, generator=g)
    (y_ours * w).sum().backward()
    (y_theirs * w).sum().backward()
    for layer, peft_layer in pairs:
        for mine, their in [(layer.lora_A, peft_layer.lora_A["default"].weight),
                            (layer.lora_B, peft_layer.lora_B["default"].weight)]:
            torch.testing.assert_close(mine.grad, their.grad, atol=1e-6, rtol=0)


def test_d1_equals_peft_lora_on_vit(float64) -> None:
    from peft import LoraConfig, get_peft_model

    base = tiny_vit().double()
    ours = capaboost.apply(copy.deepcopy(base), CapaBoostConfig(d=1, density=1.0, r=4, alpha=8,
                                                                target_modules=("qkv",)))  # the fused option
    theirs = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=["qkv"]))
    randomize_lora_B(ours)
    for name, layer in lora_layers(ours).items():
        peft_layer = theirs.get_submodule("base_model.model." + name)
        with torch.no_grad():
            peft_layer.lora_A["default"].weight.copy_(layer.lora_A)
            peft_layer.lora_B["default"].weight.copy_(layer.lora_B)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-6, rtol=0)


def test_peft_style_init() -> None:
    """init='peft': A ~ U(+-1/sqrt(in)) (kaiming a=sqrt 5), B = 0; init='official': U(+-1/sqrt(r))."""
    base = nn.Linear(256, 64)
    masks = make_masks((4, 256), 1, 1.0), make_masks((64, 4), 1, 1.0)
    peft_init = LoRALinear(base, 4, 8, *masks)
    official = LoRALinear(base, 4, 8, *masks, init="official")
    assert not peft_init.lora_B.any() and not official.lora_B.any()
    assert peft_init.lora_A.abs().max() <= 1 / 16 and peft_init.lora_A.abs().max() > 0.9 / 16
    assert official.lora_A.abs().max() <= 0.5 and official.lora_A.abs().max() > 0.45


@pytest.mark.parametrize("r", [1, 8])
def test_official_init_is_the_authors_construction(r: int) -> None:
    """The authors' A, written out (LINs-lab/CapaBoost a0d9963, src/transformers/adapters/lora.py
    lines 50, 60, 367, 466): ``nn.Linear(r, in)`` re-initialised by ``kaiming_uniform_(a=sqrt 5)`` and
    used as ``x @ weight``, so PEFT's [r, in] A is its transpose. Same generator state, same values;
    the bound is torch's kaiming formula over fan_in = r (1.0 at SQuAD's r=1, 0.35 at r=8)."""
    import math

    in_f, out_f = 96, 32
    base = nn.Linear(in_f, out_f)
    masks = make_masks((r, in_f), 2, 0.5, seed=1), make_masks((out_f, r), 2, 0.5, seed=2)
    torch.manual_seed(123)
    ours = LoRALinear(base, r, 2 * r, *masks, init="official").lora_A.detach()
    theirs = nn.Linear(r, in_f, bias=False)  # their lora_A[0]
    torch.manual_seed(123)
    nn.init.kaiming_uniform_(theirs.weight, a=math.sqrt(5))
    assert theirs.weight.shape == (in_f, r)
    assert torch.equal(ours, theirs.weight.detach().T)
    bound = nn.init.calculate_gain("leaky_relu", math.sqrt(5)) * math.sqrt(3 / r)
    assert abs(bound - 1 / math.sqrt(r)) < 1e-12
    assert ours.abs().max() <= bound and ours.abs().max() > 0.95 * bound
    x = torch.randn(5, in_f)  # their forward's first factor: x @ A.weight == x @ ours.T
    torch.testing.assert_close(x @ theirs.weight, x @ ours.T)


# ---------------------------------------------------------------- 2. stacked forward == loop
def _layer(d: int, density: float, kind: str, dropout: float = 0.0, seed: int = 0) -> LoRALinear:
    torch.manual_seed(seed)
    base = nn.Linear(24, 16)
    base.requires_grad_(False)
    layer = LoRALinear(base, 4, 12, make_masks((4, 24), d, density, kind, seed=seed),
                       make_masks((16, 4), d, density, kind, seed=seed + 1), dropout=dropout)
    with torch.no_grad():
        layer.lora_B.normal_(0, 0.3)
    return layer


def _loop(layer: LoRALinear, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """The official forward: d separate branches, each its own masked A and B, outputs summed."""
    out = F.linear(x, layer.base_layer.weight, layer.base_layer.bias)
    for i in range(layer.mask_A.shape[0]):
        xi = x if keep is None else x * keep[..., i, :]
        out = out + layer.scaling * F.linear(F.linear(xi, layer.lora_A * layer.mask_A[i]),
                                             layer.lora_B * layer.mask_B[i])
    return out


def _grads(layer: LoRALinear, y: torch.Tensor, w: torch.Tensor) -> list[torch.Tensor]:
    layer.zero_grad()
    (y * w).sum().backward()
    return [layer.lora_A.grad.clone(), layer.lora_B.grad.clone()]


@pytest.mark.parametrize("d, density, kind", [(1, 0.5, "random"), (2, 0.5, "random"), (3, 0.3, "random"),
                                              (2, 0.5, "nm"), (3, 0.5, "same"), (2, 0.5, "none")])
def test_stacked_equals_loop(float64, d: int, density: float, kind: str) -> None:
    layer = _layer(d, density, kind)
    x = torch.randn(3, 5, 24)
    w = torch.randn(3, 5, 16)
    y = layer(x)
    ref = _loop(layer, x)
    torch.testing.assert_close(y, ref, atol=1e-10, rtol=0)
    for ours, theirs in zip(_grads(layer, y, w), _grads(layer, _loop(layer, x), w), strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-10, rtol=0)
    # the gradient is zero wherever no branch keeps the entry (it never reaches the output)
    g_a, g_b = _grads(layer, layer(x), w)
    assert not g_a[~layer.mask_A.any(0)].any() and not g_b[~layer.mask_B.any(0)].any()
    # delta_weight is the dense sum of masked products
    delta = sum((layer.lora_B * layer.mask_B[i]) @ (layer.lora_A * layer.mask_A[i]) for i in range(d))
    torch.testing.assert_close(layer.delta_weight(), layer.scaling * delta, atol=1e-10, rtol=0)


def test_per_branch_dropout_equals_loop(float64) -> None:
    """With dropout each branch sees its own dropout mask of x (the official branches are separate
    modules). Reference: draw the d keep-masks of x with the same seed, then loop."""
    d, p = 3, 0.3
    layer = _layer(d, 0.5, "random", dropout=p).train()
    x = torch.randn(3, 5, 24)
    torch.manual_seed(7)
    y = layer(x)
    torch.manual_seed(7)
    keep = F.dropout(torch.ones(3, 5, d, 24), p, training=True)
    assert not torch.equal(keep[..., 0, :], keep[..., 1, :])  # branches drop different inputs
    torch.testing.assert_close(y, _loop(layer, x, keep), atol=1e-10, rtol=0)
    layer.eval()
    torch.testing.assert_close(layer(x), _loop(layer, x), atol=1e-10, rtol=0)  # no dropout in eval


# ---------------------------------------------------------------- 3. training == official d copies
class OfficialLoRA(nn.Module):
    """The official formulation: d physical copies of A and B, initialised to W * M_i."""

    def __init__(self, base: nn.Linear, layer: LoRALinear) -> None:
        super().__init__()
        self.base, self.scaling = base, layer.scaling
        self.mask_A, self.mask_B = layer.mask_A.clone(), layer.mask_B.clone()
        d = self.mask_A.shape[0]
        self.A = nn.ParameterList([nn.Parameter((layer.lora_A * self.mask_A[i]).detach().clone())
                                   for i in range(d)])
        self.B = nn.ParameterList([nn.Parameter((layer.lora_B * self.mask_B[i]).detach().clone())
                                   for i in range(d)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        for a, b in zip(self.A, self.B, strict=True):
            out = out + self.scaling * F.linear(F.linear(x, a), b)
        return out

    def sync_grads(self) -> None:
        """Mask each copy's grad, sum over copies, write the sum back to every copy."""
        for copies, masks in [(self.A, self.mask_A), (self.B, self.mask_B)]:
            total = sum(p.grad * m for p, m in zip(copies, masks, strict=True))
            for p in copies:
                p.grad = total.clone()

    @torch.no_grad()
    def remask(self) -> None:
        for copies, masks in [(self.A, self.mask_A), (self.B, self.mask_B)]:
            for p, m in zip(copies, masks, strict=True):
                p.mul_(m)

    def delta_weight(self) -> torch.Tensor:
        return self.scaling * sum(b @ a for a, b in zip(self.A, self.B, strict=True))


@pytest.mark.slow
def test_training_equals_official_copies(float64) -> None:
    base = tiny_roberta().double()
    ours = capaboost.apply(copy.deepcopy(base), CapaBoostConfig(d=3, density=0.5, r=4, alpha=8))
    randomize_lora_B(ours)
    start = {n: layer.delta_weight().detach().clone() for n, layer in lora_layers(ours).items()}
    ref = copy.deepcopy(base)
    ref.requires_grad_(False)
    ref.classifier.requires_grad_(True)
    official = {}
    for name, layer in lora_layers(ours).items():
        parent, _, child = name.rpartition(".")
        official[name] = OfficialLoRA(ref.get_submodule(name), layer)
        setattr(ref.get_submodule(parent), child, official[name])
    opt_ours = torch.optim.AdamW([p for p in ours.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    opt_ref = torch.optim.AdamW([p for p in ref.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    ours.train()
    ref.train()
    for step in range(20):
        inputs, y = batch(seed=step), labels(seed=step)
        loss_ours = F.cross_entropy(ours(**inputs).logits, y)
        loss_ours.backward()
        opt_ours.step()
        opt_ours.zero_grad()
        loss_ref = F.cross_entropy(ref(**inputs).logits, y)
        loss_ref.backward()
        for module in official.values():
            module.sync_grads()
        opt_ref.step()
        opt_ref.zero_grad()
        for module in official.values():
            module.remask()
        assert abs(loss_ours.item() - loss_ref.item()) < 1e-5, step
    for name, layer in lora_layers(ours).items():
        torch.testing.assert_close(layer.delta_weight(), official[name].delta_weight(), atol=1e-5, rtol=0)
        assert (layer.delta_weight() - start[name]).abs().max() > 1e-3  # training moved it
    torch.testing.assert_close(ours.classifier.dense.weight, ref.classifier.dense.weight, atol=1e-5, rtol=0)
    # one shared tensor: the optimizer state holds one copy, the official loop d copies
    state_ours = sum(s["exp_avg"].numel() for s in opt_ours.state.values())
    state_ref = sum(s["exp_avg"].numel() for s in opt_ref.state.values())
    trainable = sum(p.numel() for p in ours.parameters() if p.requires_grad)
    lora = sum(layer.lora_A.numel() + layer.lora_B.numel() for layer in lora_layers(ours).values())
    assert state_ours == trainable and state_ref == trainable + 2 * lora
    for layer in lora_layers(ours).values():
        assert opt_ours.state[layer.lora_A]["exp_avg"].shape == layer.lora_A.shape


def test_training_moves_delta(float64) -> None:
    """From the standard init (B = 0) a few steps make every layer's delta W nonzero."""
    model = capaboost.apply(tiny_roberta().double(), CapaBoostConfig(d=2, density=0.5, r=4, alpha=8))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for step in range(3):
        F.cross_entropy(model(**batch(seed=step)).logits, labels(seed=step)).backward()
        opt.step()
        opt.zero_grad()
    for layer in lora_layers(model).values():
        assert layer.delta_weight().abs().max() > 0


def test_one_step_changes_only_lora_and_head() -> None:
    model = capaboost.apply(tiny_roberta(), CapaBoostConfig(d=2, density=0.5, r=4))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n or n.startswith("classifier.") for n in trainable)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    model.train()
    F.cross_entropy(model(**batch()).logits, labels()).backward()
    opt.step()
    assert {n for n, p in model.named_parameters() if not torch.equal(p, before[n])} == trainable


# ---------------------------------------------------------------- timm ViT: q and v of the fused qkv
class ReferenceQV(nn.Module):
    """The LoRA paper's q/v LoRA on a fused projection, written out: separate (A, B) for q and for v,
    d explicit masked branches each, added to the q and v thirds of the output; k untouched."""

    def __init__(self, qkv: nn.Linear, q: LoRALinear, v: LoRALinear) -> None:
        super().__init__()
        self.qkv, self.parts = qkv, [(q.lora_A, q.lora_B, q.mask_A, q.mask_B, q.scaling),
                                     (v.lora_A, v.lora_B, v.mask_A, v.mask_B, v.scaling)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, v = [out + s * sum(x @ (a * ma[i]).T @ (b * mb[i]).T for i in range(len(ma)))
                for out, (a, b, ma, mb, s) in zip((q, v), self.parts, strict=True)]
        return torch.cat([q, k, v], dim=-1)


def _qv_pair() -> tuple[nn.Module, nn.Module, list[nn.Parameter]]:
    base = tiny_vit().double()
    ours = capaboost.apply(copy.deepcopy(base), CapaBoostConfig(d=2, density=0.5, r=4, alpha=8))
    randomize_lora_B(ours)
    ref, params = copy.deepcopy(base), []
    for block_ours, block_ref in zip(ours.blocks, ref.blocks, strict=True):
        v, q = block_ours.attn.qkv, block_ours.attn.qkv.base_layer
        assert (q.rows, v.rows) == ((0, 32), (64, 96))
        block_ref.attn.qkv = ReferenceQV(block_ref.attn.qkv, q, v)
        params += [q.lora_A, q.lora_B, v.lora_A, v.lora_B]
    ref.head = ours.head
    return ours, ref, params


def test_vit_qv_equals_reference(float64) -> None:
    ours, ref, params = _qv_pair()
    assert len(lora_layers(ours)) == 4 and ours.capaboost_config.target_modules == ("q", "v")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = ours(x)
    torch.testing.assert_close(y, ref(x), atol=1e-10, rtol=0)
    grads = torch.autograd.grad(y.pow(2).sum(), params)
    ref_grads = torch.autograd.grad(ref(x).pow(2).sum(), params)
    for g, h in zip(grads, ref_grads, strict=True):
        assert g.abs().max() > 0
        torch.testing.assert_close(g, h, atol=1e-10, rtol=0)


def test_vit_qv_leaves_k_alone(float64) -> None:
    """delta W of the fused projection, read off the merged weight: k's rows stay exactly zero."""
    ours, _, _ = _qv_pair()
    w0 = [b.attn.qkv.weight.detach().clone() for b in ours.blocks]
    capaboost.merge(ours)
    for block, before in zip(ours.blocks, w0, strict=True):
        delta = block.attn.qkv.weight - before
        assert delta[32:64].abs().max() == 0
        assert delta[:32].abs().max() > 0 and delta[64:].abs().max() > 0
        assert capaboost.analysis.delta_rank(block.attn.qkv) == 8  # d * r for v


def test_vit_fused_option_adapts_k() -> None:
    model = capaboost.apply(tiny_vit(), CapaBoostConfig(d=2, density=0.5, r=4, target_modules=("qkv",)))
    randomize_lora_B(model)
    assert all(layer.rows == (0, 96) for layer in lora_layers(model).values())
    assert all(layer.delta_weight()[32:64].abs().max() > 0 for layer in lora_layers(model).values())


# ---------------------------------------------------------------- merge_and_unload, training while merged
@pytest.mark.parametrize("build", [tiny_roberta, tiny_vit], ids=["roberta", "timm-vit-qv"])
def test_merge_and_unload(build) -> None:
    model = capaboost.apply(build(), CapaBoostConfig(d=2, density=0.5, r=4, alpha=8))
    randomize_lora_B(model)
    inputs = batch() if build is tiny_roberta else torch.randn(2, 3, 32, 32)

    def run(m: nn.Module) -> torch.Tensor:
        return m(inputs) if torch.is_tensor(inputs) else m(**inputs).logits

    with torch.no_grad():
        expected = run(model)
        merged = run(capaboost.merge(copy.deepcopy(model)))
        plain = capaboost.merge_and_unload(model)
        got = run(plain)
    assert plain is model and not hasattr(plain, "capaboost_config")
    assert not any(type(m).__module__.startswith("capaboost") for m in plain.modules())
    assert not any(n.endswith("base_layer") or "lora" in n for n, _ in plain.named_modules())
    reference = build()  # the same backbone untouched: exactly its module types, in the same places
    assert [(n, type(m)) for n, m in plain.named_modules()] == \
        [(n, type(m)) for n, m in reference.named_modules()]
    torch.testing.assert_close(got, merged, atol=1e-6, rtol=0)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_training_while_merged_raises() -> None:
    model = capaboost.merge(capaboost.apply(tiny_roberta(), CapaBoostConfig(r=4)))
    with torch.no_grad():
        model.train()(**batch())  # train-mode forward without gradients (e.g. a dropout check) is fine
    with pytest.raises(RuntimeError, match="unmerge"):
        model(**batch())
    capaboost.unmerge(model)
    model(**batch()).logits.sum().backward()
