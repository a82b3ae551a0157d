"""apply / merge / unmerge / count_parameters: CapaBoost on a whole model."""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from . import families
from .adapter import MaskedBottleneck, PfeifferMlp, PfeifferOutput
from .config import CapaBoostConfig
from .lora import LoRALinear
from .masks import make_masks, mask_seed
from .prefix import apply_prefix


def apply(model: nn.Module, cfg: CapaBoostConfig | None = None) -> nn.Module:
    """Freeze the backbone, add the PEFT modules, train the task head; returns the model.

    LoRA and PAdapter work in place; prefix returns PEFT's wrapper around the model.
    Masks depend only on (cfg.seed, module name, tensor name).
    """
    cfg = cfg or CapaBoostConfig()
    if peft_modules(model):
        raise ValueError("model already has CapaBoost modules: apply once, to a fresh model")
    fam = families.detect(model)
    heads = families.present_heads(model, cfg.modules_to_save if cfg.modules_to_save is not None
                                   else fam.heads)
    if cfg.method == "prefix":
        if not fam.prefix:
            raise ValueError(f"method='prefix' needs past-key-value support, which family "
                             f"{fam.name!r} lacks; supported: bert, roberta, xlm-roberta "
                             f"(use method='lora' or 'padapter')")
        model = apply_prefix(model, cfg, heads)
        cfg = dataclasses.replace(cfg, modules_to_save=heads)
    else:
        model.requires_grad_(False)
        if cfg.method == "lora":
            cfg = dataclasses.replace(cfg, target_modules=_add_lora(model, cfg, fam))
        else:
            _add_adapters(model, cfg, fam)
        for head in heads:
            model.get_submodule(head).requires_grad_(True)
        cfg = dataclasses.replace(cfg, modules_to_save=heads)
    model.capaboost_config = cfg  # resolved targets and heads: what save/load rebuilds from
    return model


def _masks(cfg: CapaBoostConfig, shape: tuple[int, ...], *names: str):
    return make_masks(shape, cfg.d, cfg.density, cfg.mask, mask_seed(cfg.seed, *names), cfg.nm_group)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def _add_lora(model: nn.Module, cfg: CapaBoostConfig, fam: families.Family) -> tuple[str, ...]:
    targets = cfg.target_modules if cfg.target_modules is not None else fam.lora_targets
    names = [n for n, m in model.named_modules()
             if isinstance(m, nn.Linear) and families.match_suffix(n, targets)]
    if not names:
        raise ValueError(f"target_modules {targets} matched no nn.Linear in this {fam.name} model; "
                         f"defaults per family: " + ", ".join(f"{k}: {v.lora_targets}"
                                                              for k, v in families.FAMILIES.items()))
    for name in names:
        base = model.get_submodule(name)
        out_f, in_f = base.weight.shape
        _replace(model, name, LoRALinear(
            base, cfg.r, cfg.alpha, _masks(cfg, (cfg.r, in_f), name, "lora_A"),
            _masks(cfg, (out_f, cfg.r), name, "lora_B"), cfg.dropout, cfg.init))
    return tuple(targets)


def _add_adapters(model: nn.Module, cfg: CapaBoostConfig, fam: families.Family) -> None:
    sites = families.adapter_sites(model, fam)
    if not sites:
        raise ValueError(f"method='padapter' found no FFN output to adapt in family {fam.name!r}; "
                         f"supported: {', '.join(k for k, v in families.FAMILIES.items() if v.adapter_site)}")
    wrapper = PfeifferMlp if fam.adapter_kind == "mlp" else PfeifferOutput
    for name in sites:
        base = model.get_submodule(name)
        hidden = base.fc2.out_features if fam.adapter_kind == "mlp" else base.dense.out_features
        width = max(1, hidden // cfg.reduction_factor)
        adapter = MaskedBottleneck(hidden, width, hidden, _masks(cfg, (width, hidden), name, "down"),
                                   _masks(cfg, (hidden, width), name, "up"), nn.ReLU())
        _replace(model, name, wrapper(base, adapter.to(next(base.parameters()).device)))


def peft_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (LoRALinear, MaskedBottleneck))}


def mask_unions(model: nn.Module) -> dict[int, torch.Tensor]:
    """id(parameter) -> entries at least one of its d masks keeps: what trains, counts and is saved."""
    return {id(p): m.any(0) for mod in peft_modules(model).values() for p, m in mod.masked_parameters()}


def _lora_layers(model: nn.Module) -> list[LoRALinear]:
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    if not layers:
        raise ValueError("merge/unmerge need CapaBoost LoRA layers (method='lora'); this model has none")
    return layers


def merge(model: nn.Module) -> nn.Module:
    """Fold scaling * sum_i (B*M^B_i)(A*M^A_i) into each base weight: inference at base-model cost."""
    for layer in _lora_layers(model):
        layer.merge()
    return model


def unmerge(model: nn.Module) -> nn.Module:
    for layer in _lora_layers(model):
        layer.unmerge()
    return model


def count_parameters(model: nn.Module) -> dict[str, int]:
    """trainable: numel with requires_grad; effective: trainable entries some mask keeps
    (the paper's count; unmasked trainables such as the head count fully); total: all."""
    union = {key: int(kept.sum()) for key, kept in mask_unions(model).items()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    return {"trainable": sum(p.numel() for p in trainable),
            "effective": sum(union.get(id(p), p.numel()) for p in trainable),
            "total": sum(p.numel() for p in model.parameters())}
