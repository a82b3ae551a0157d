"""apply / merge / unmerge / merge_and_unload / count_parameters: CapaBoost on a whole model."""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import torch
from torch import nn

from . import backbones
from .adapter import MaskedBottleneck, PfeifferMlp, PfeifferOutput
from .config import CapaBoostConfig
from .lora import LoRALinear, projection
from .masks import site_masks
from .prefix import apply_prefix, prefix_inference_size, prompt_encoder


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP / DataParallel / torch.compile wrappers (any nesting)."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and type(model).__name__ == "OptimizedModule":
            model = model._orig_mod
        else:
            return model


def apply(model: nn.Module, cfg: CapaBoostConfig | None = None) -> nn.Module:
    """Freeze the backbone, add the PEFT modules, train the task head; returns the model.

    LoRA and PAdapter work in place; prefix returns PEFT's wrapper around the model. A DDP or
    torch.compile wrapper is looked through (wrap again after apply). Masks depend only on
    (cfg.mask_seed, module name, tensor name).
    """
    cfg, model = cfg or CapaBoostConfig(), unwrap(model)
    if peft_modules(model):
        raise ValueError("model already has CapaBoost modules: apply once, to a fresh model")
    bb = backbones.detect(model)
    if cfg.method not in bb.methods:
        supported = ", ".join(k for k, v in backbones.BACKBONES.items() if cfg.method in v.methods)
        raise ValueError(f"method={cfg.method!r} is not supported on backbone {bb.name!r} (it takes "
                         f"{', '.join(bb.methods) or 'none'}); method={cfg.method!r} runs on: {supported}")
    heads = backbones.present_heads(model, bb.heads) if cfg.modules_to_save is None else cfg.modules_to_save
    missing = [h for h in heads if not _has_submodule(model, h)]
    if missing:  # a named head that is not there would silently stay frozen
        raise ValueError(f"modules_to_save {missing} not found in this {bb.name} model (give dotted "
                         f"paths, e.g. 'bert.pooler')")
    if cfg.method == "prefix":
        model = apply_prefix(model, cfg, heads)
    else:
        add = _add_lora if cfg.method == "lora" else _add_adapters
        sites = add(model, cfg, bb, build=False)  # every error before the model is touched
        model.requires_grad_(False)
        add(model, cfg, bb, build=True)
        if cfg.method == "lora":
            cfg = dataclasses.replace(cfg, target_modules=sites)
        for head in heads:
            model.get_submodule(head).requires_grad_(True)
    model.capaboost_config = dataclasses.replace(cfg, modules_to_save=heads)  # what save/load rebuild
    return model


def _has_submodule(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def _add_lora(model: nn.Module, cfg: CapaBoostConfig, bb: backbones.Backbone,
              build: bool) -> tuple[str, ...]:
    """LoRA on every linear projection (nn.Linear, transformers Conv1D) whose name ends in a target; on
    a fused qkv projection, targets "q"/"k"/"v" adapt its thirds, each with its own A and B (one
    wraps the other)."""
    targets = cfg.target_modules if cfg.target_modules is not None else bb.lora_targets
    parts = tuple(t for t in targets if bb.fused_qkv and t in ("q", "k", "v"))
    names = [n for n, m in model.named_modules() if projection(m) is not None and
             (backbones.match_suffix(n, targets) or (parts and backbones.match_suffix(n, (bb.fused_qkv,))))]
    if not names:
        raise ValueError(f"target_modules {targets} matched no linear layer in this {bb.name} model; "
                         f"defaults per backbone: " + ", ".join(f"{k}: {v.lora_targets}"
                                                                for k, v in backbones.BACKBONES.items()))
    for name in names:
        out_f, in_f, _ = projection(model.get_submodule(name))
        whole = backbones.match_suffix(name, targets)
        slices = [(None, None)] if whole else [(p, _third(p, out_f)) for p in parts]
        for part, rows in slices:
            tag = "" if part is None else f"{part}/"
            masks = (site_masks(cfg, (cfg.r, in_f), name, tag + "lora_A"),
                     site_masks(cfg, ((rows[1] - rows[0]) if rows else out_f, cfg.r), name, tag + "lora_B"))
            if build:
                _replace(model, name, LoRALinear(model.get_submodule(name), cfg.r, cfg.alpha, *masks,
                                                 cfg.dropout, cfg.init, rows))
    return tuple(targets)


def _third(part: str, out_features: int) -> tuple[int, int]:
    size = out_features // 3
    start = "qkv".index(part) * size
    return start, start + size


def _add_adapters(model: nn.Module, cfg: CapaBoostConfig, bb: backbones.Backbone, build: bool) -> None:
    sites = backbones.adapter_sites(model, bb)
    if not sites:
        supported = ", ".join(k for k, v in backbones.BACKBONES.items() if v.adapter_site)
        raise ValueError(f"method='padapter' found no FFN output to adapt in backbone {bb.name!r}; "
                         f"supported: {supported}")
    wrapper = PfeifferMlp if bb.adapter_kind == "mlp" else PfeifferOutput
    for name in sites:
        base = model.get_submodule(name)
        hidden = base.fc2.out_features if bb.adapter_kind == "mlp" else base.dense.out_features
        width = max(1, hidden // cfg.reduction_factor)
        masks = site_masks(cfg, (width, hidden), name, "down"), site_masks(cfg, (hidden, width), name, "up")
        if build:
            adapter = MaskedBottleneck(hidden, width, hidden, *masks, nn.ReLU())
            _replace(model, name, wrapper(base, adapter.to(next(base.parameters()).device)))


def peft_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in unwrap(model).named_modules() if isinstance(m, (LoRALinear, MaskedBottleneck))}


def mask_unions(model: nn.Module) -> dict[int, torch.Tensor]:
    """id(parameter) -> entries at least one of its d masks keeps: what trains, counts and is saved."""
    return {id(p): m.any(0) for mod in peft_modules(model).values() for p, m in mod.masked_parameters()}


def _lora_layers(model: nn.Module) -> list[LoRALinear]:
    layers = [m for m in unwrap(model).modules() if isinstance(m, LoRALinear)]
    if not layers:
        raise ValueError("merge/unmerge need CapaBoost LoRA layers (method='lora'); this model has none")
    return layers


def merge(model: nn.Module) -> nn.Module:
    """Fold scaling * sum_i (B*M^B_i)(A*M^A_i) into each base weight: training then raises."""
    for layer in _lora_layers(model):
        layer.merge()
    return model


def unmerge(model: nn.Module) -> nn.Module:
    for layer in _lora_layers(model):
        layer.unmerge()
    return model


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge, then put each base Linear back in place of its wrapper: the plain backbone with the
    trained delta W in its weights, at exactly the base model's inference cost (PEFT's name)."""
    inner = unwrap(model)
    merge(inner)
    layers = {n: m for n, m in inner.named_modules() if isinstance(m, LoRALinear)}
    for name in sorted(layers, key=len, reverse=True):  # q inside v on a fused qkv: innermost first
        _replace(inner, name, inner.get_submodule(name).base_layer)
    inner.__dict__.pop("capaboost_config", None)
    return model


def _peft_parameters(model: nn.Module) -> dict[int, nn.Parameter]:
    """The PEFT weights themselves (no backbone, no head): LoRA factors, adapters, the prefix."""
    roots = [*peft_modules(model).values(), *filter(None, [prompt_encoder(model)])]
    return {id(p): p for root in roots for n, p in root.named_parameters() if not n.startswith("base_layer.")}


def count_parameters(model: nn.Module) -> dict[str, int]:
    """``tally`` of a CapaBoost model: its PEFT weights are the LoRA factors, adapters and prefix, each
    counted by the union of its d masks. Prefix tuning adds prefix_inference: the key/value entries the
    prefix becomes at inference (its MLP exists only in training)."""
    model = unwrap(model)
    kept = {key: int(union.sum()) for key, union in mask_unions(model).items()}
    out = tally(model.parameters(), _peft_parameters(model).values(), kept)
    inference = prefix_inference_size(model)
    if inference is not None:
        out["prefix_inference"] = inference
    return out


def tally(parameters: Iterable[nn.Parameter], peft: Iterable[nn.Parameter],
          kept: dict[int, int] | None = None) -> dict[str, int]:
    """The counts every table quotes, for any PEFT model (the PEFT-library baselines use it too): from
    the model's parameters (each once), its PEFT weights and ``kept`` (id -> entries some mask keeps;
    unmasked tensors count fully). trainable: numel with requires_grad; effective: trainable entries
    some mask keeps (the head counts fully); peft: the PEFT weights' kept entries, heads excluded (what
    PEFT papers quote); total: all."""
    kept, parameters = kept or {}, list(parameters)
    trainable = [p for p in parameters if p.requires_grad]
    return {"trainable": sum(p.numel() for p in trainable),
            "effective": sum(kept.get(id(p), p.numel()) for p in trainable),
            "peft": sum(kept.get(id(p), p.numel()) for p in peft),
            "total": sum(p.numel() for p in parameters)}
