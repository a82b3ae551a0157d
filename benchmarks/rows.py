"""What each benchmark row is, and how to build it on a shared random-init RoBERTa backbone.

Every row of one run shares the frozen backbone tensors of one template model (only the head,
the PEFT weights and the merged rows' attention weights are its own), so all rows stay in memory
together and their steps can be interleaved round by round: the load of a shared machine then
hits every row alike.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import peft
import torch
from torch import nn
from transformers import RobertaConfig, RobertaForSequenceClassification

import capaboost

from . import official

KINDS = ("peft-lora", "capaboost", "official", "floor", "base-infer", "merged-infer", "unloaded-infer",
         "unmerged-infer")


@dataclass(frozen=True)
class RowSpec:
    name: str
    group: str            # rows of a group are compared to the group's reference row
    kind: str             # one of KINDS
    method: str = "lora"  # capaboost / official rows: "lora" | "padapter"
    d: int = 1
    density: float = 1.0
    r: int = 8
    reference: bool = False

    @property
    def train(self) -> bool:
        return not self.kind.endswith("-infer")


def default_rows() -> list[RowSpec]:
    cb, off = "capaboost", "official"
    rows = [RowSpec("peft-lora r=8", "lora", "peft-lora", r=8, reference=True)]
    rows += [RowSpec(f"capaboost-lora r=8 d={d} p=0.5", "lora", cb, d=d, density=0.5) for d in (1, 2, 4)]
    rows += [RowSpec(f"peft-lora r={8 * d}", "lora", "peft-lora", r=8 * d) for d in (2, 4)]
    rows += [RowSpec(f"official-lora r=8 d={d} p=0.5", "lora", off, d=d, density=0.5) for d in (2, 4)]
    rows += [RowSpec("floor: frozen backbone, q/v biases", "lora", "floor")]
    rows += [RowSpec("padapter vanilla (d=1 p=1)", "padapter", cb, "padapter", reference=True)]
    rows += [RowSpec(f"capaboost-padapter d={d} p=0.5", "padapter", cb, "padapter", d, 0.5)
             for d in (1, 2, 4)]
    rows += [RowSpec(f"official-padapter d={d} p=0.5", "padapter", off, "padapter", d, 0.5)
             for d in (2, 4)]
    rows += [RowSpec("base model", "inference", "base-infer", reference=True),
             RowSpec("capaboost-lora d=2 p=0.5 merged", "inference", "merged-infer", d=2, density=0.5),
             RowSpec("merge_and_unload d=2 p=0.5", "inference", "unloaded-infer", d=2,
                     density=0.5),
             RowSpec("capaboost-lora d=2 p=0.5 unmerged", "inference", "unmerged-infer", d=2, density=0.5)]
    return rows


@dataclass(frozen=True)
class Shape:
    """Model and batch size. ``base`` is RoBERTa-base (125M) with batch 8 x seq 128."""

    layers: int = 12
    hidden: int = 768
    heads: int = 12
    intermediate: int = 3072
    vocab: int = 50265
    batch: int = 8
    seq: int = 128

    @classmethod
    def tiny(cls) -> Shape:
        return cls(layers=2, hidden=32, heads=2, intermediate=64, vocab=100, batch=2, seq=16)

    def config(self) -> RobertaConfig:
        return RobertaConfig(vocab_size=self.vocab, hidden_size=self.hidden, num_hidden_layers=self.layers,
                             num_attention_heads=self.heads, intermediate_size=self.intermediate,
                             max_position_embeddings=max(514, self.seq + 2), type_vocab_size=1, num_labels=2)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def build_template(shape: Shape, device: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return RobertaForSequenceClassification(shape.config()).to(device)


def make_batch(shape: Shape, device: str, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, shape.vocab, (shape.batch, shape.seq), generator=gen)
    labels = torch.randint(0, 2, (shape.batch,), generator=gen)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "labels": labels.to(device)}


_OWN = ("classifier.", "attention.self.query.bias", "attention.self.value.bias")
_ATTN = ("attention.self.query.weight", "attention.self.value.weight")


def _share(template: nn.Module, own: tuple[str, ...] = ()) -> nn.Module:
    """A copy of ``template`` that shares its backbone tensors (not the head, the floor row's q/v
    biases or ``own``): every row can then set requires_grad on its own trainables."""
    memo = {id(p): p for n, p in template.named_parameters()
            if not n.startswith(_OWN[0]) and not n.endswith(_OWN[1:] + own)}
    return copy.deepcopy(template, memo)


@dataclass
class Row:
    spec: RowSpec
    model: nn.Module
    step: Callable[[], None]
    optimizer: torch.optim.Optimizer | None = None
    counts: dict[str, int] = field(default_factory=dict)


def build_row(spec: RowSpec, template: nn.Module, batch: dict[str, torch.Tensor], seed: int = 1,
              lr: float = 1e-4) -> Row:
    torch.manual_seed(seed)  # LoRA A init and the merged row's random B
    model = _share(template, _ATTN if spec.kind in ("merged-infer", "unloaded-infer") else ())
    hooks: tuple[Callable[[nn.Module], None], Callable[[nn.Module], None]] | None = None
    if spec.kind == "peft-lora":
        cfg = peft.LoraConfig(task_type="SEQ_CLS", r=spec.r, lora_alpha=16, lora_dropout=0.0,
                              target_modules=["query", "value"])
        model = peft.get_peft_model(model, cfg)
    elif spec.kind == "floor":
        # The least a q/v adapter forces on autograd: dL/d(q, v output) in every layer, layer 0 included,
        # but no dL/dx below it. Training only the q/v biases (and the head) asks exactly that.
        model.requires_grad_(False)
        model.classifier.requires_grad_(True)
        for name, p in model.named_parameters():
            if name.endswith(("attention.self.query.bias", "attention.self.value.bias")):
                p.requires_grad_(True)
    elif spec.kind == "base-infer":
        model.requires_grad_(False)
    else:
        model = capaboost.apply(model, capaboost.CapaBoostConfig(
            method=spec.method, d=spec.d, density=spec.density, r=spec.r, alpha=16))
        if spec.kind == "official":
            model = official.to_official(model)
            hooks = (official.after_backward, official.after_step)
        elif spec.kind == "merged-infer":
            _randomise_lora_b(model)
            capaboost.merge(model)
        elif spec.kind == "unloaded-infer":  # merged, wrappers gone: the plain backbone's modules
            _randomise_lora_b(model)
            model = capaboost.merge_and_unload(model)
        elif spec.kind == "unmerged-infer":
            _randomise_lora_b(model)
    counts = official.count_parameters(model) if spec.kind == "official" \
        else capaboost.count_parameters(model)
    if not spec.train:
        model.eval()
        return Row(spec, model, lambda: _infer(model, batch), None, counts)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.01)
    return Row(spec, model, lambda: _train_step(model, opt, batch, hooks), opt, counts)


def _randomise_lora_b(model: nn.Module) -> None:
    """B starts at zero; a non-zero B makes the merge a real weight update."""
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, capaboost.LoRALinear):
                layer.lora_B.normal_(0, 0.02)


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
                hooks: tuple[Callable[[nn.Module], None], Callable[[nn.Module], None]] | None) -> None:
    loss = model(**batch).loss
    loss.backward()
    if hooks:
        hooks[0](model)
    opt.step()
    if hooks:
        hooks[1](model)
    opt.zero_grad(set_to_none=True)


def _infer(model: nn.Module, batch: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])


def optimizer_state_bytes(opt: torch.optim.Optimizer | None) -> int:
    if opt is None:
        return 0
    return sum(t.numel() * t.element_size() for state in opt.state.values() for t in state.values()
               if torch.is_tensor(t))


def spec_dict(spec: RowSpec) -> dict[str, Any]:
    return asdict(spec)
