"""Compact checkpoints and export to stock PEFT.

A checkpoint holds the trained tensors, the config (with the mask seed) and the masks' digest;
the masks are rebuilt on load and must hash to that digest (otherwise the packed values would land
in the wrong places). Entries of a masked weight that no branch keeps never reach the output,
so only the union of the masks is stored: the file tracks the *effective* parameters.

Each tensor's bytes are hashed into the metadata (``sha256``): safetensors itself checks the header but
not the data, so one flipped byte inside a tensor would load silently. ``capaboost/2`` files written
before the hashes existed still load, unchecked.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .config import CapaBoostConfig
from .digest import mask_digest
from .lora import LoRALinear
from .model import apply, mask_unions, unwrap

FORMAT = "capaboost/2"  # /1 had no mask digest and masks drawn before ties were ruled out


def _config(model: nn.Module) -> CapaBoostConfig:
    cfg = getattr(model, "capaboost_config", None)
    if cfg is None:
        raise ValueError("this model has no CapaBoost modules: call capaboost.apply first")
    return cfg


def _sha256(tensors: dict[str, torch.Tensor]) -> dict[str, str]:
    """Per tensor: sha256 of its dtype, shape and raw bytes (what the file must give back)."""
    out = {}
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        out[name] = h.hexdigest()
    return out


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:200] or type(error).__name__


def save(model: nn.Module, path: str | os.PathLike) -> None:
    """Write trainable tensors (masked ones packed to their mask union) + config, atomically."""
    model = unwrap(model)
    cfg, unions = _config(model), mask_unions(model)
    tensors, packed = {}, []
    for name, p in model.named_parameters():
        if p.requires_grad:
            union = unions.get(id(p))
            tensors[name] = (p.detach()[union] if union is not None else p.detach()).contiguous().cpu()
            if union is not None:
                packed.append(name)
    meta = {"format": FORMAT, "config": json.dumps(cfg.to_dict()), "packed": json.dumps(packed),
            "mask_digest": mask_digest(model), "sha256": json.dumps(_sha256(tensors))}
    # Atomic: a temporary file beside ``path`` (named as the harness's tasks/files.py names its own, so
    # its clean-ups recognise one a kill left), on disk before the rename makes it visible.
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a ``save`` file; a model without CapaBoost modules gets them first (from the file's config).

    Refuses, with one line and before changing any weight, a file whose masks or set of trainable
    tensors differ from the model's.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except FileNotFoundError:
        raise
    except Exception as error:  # safetensors' own error types: a truncated or garbage file
        raise ValueError(f"{path} is not a readable safetensors file (truncated or not one): "
                         f"{_one_line(error)}") from None
    if meta.get("format") != FORMAT:
        found = meta.get("format")
        old = ", written before masks were drawn without ties: retrain" if found == "capaboost/1" else ""
        raise ValueError(f"{path} is not a CapaBoost checkpoint of format {FORMAT} (format {found!r}){old}")
    try:
        cfg = CapaBoostConfig.from_dict(json.loads(meta["config"]))
    except (KeyError, ValueError, TypeError) as error:
        raise ValueError(f"{path}: its stored config is unreadable: {_one_line(error)}") from None
    try:  # all of the file is read and checked before the model is touched
        tensors, packed = load_file(str(path)), set(json.loads(meta["packed"]))
        saved_sums = json.loads(meta["sha256"]) if "sha256" in meta else None
    except Exception as error:  # header fine, data cut short or metadata mangled
        raise ValueError(f"{path} is damaged (truncated or garbled): {_one_line(error)}") from None
    if saved_sums is not None:  # absent from capaboost/2 files written before the hashes: unchecked
        sums = _sha256(tensors)
        bad = sorted(n for n in sums if saved_sums.get(n) != sums[n])
        if bad:
            raise ValueError(f"{path} is damaged: tensor {bad[0]} does not match the sha256 saved with it")
    model = unwrap(model)
    if getattr(model, "capaboost_config", None) is None:
        model = apply(model, cfg)
    elif model.capaboost_config != cfg:
        raise ValueError(f"{path}: checkpoint config {cfg} differs from the model's {model.capaboost_config}")
    saved, rebuilt = str(meta.get("mask_digest")), mask_digest(model)
    if saved != rebuilt:
        raise ValueError(f"{path}: its masks (digest {saved[:12]}) differ from the ones rebuilt here "
                         f"({rebuilt[:12]}): another mask generation or mask_seed")
    params, unions = dict(model.named_parameters()), mask_unions(model)
    trainable = {n for n, p in params.items() if p.requires_grad}
    if set(tensors) != trainable:
        raise ValueError(f"{path}: tensors not in the model {sorted(set(tensors) - trainable)[:3]}, "
                         f"trainable tensors missing from the file {sorted(trainable - set(tensors))[:3]}")
    # a merged layer holds its old delta in the base weight: take it out, load, fold the new one in
    merged = [m for m in model.modules() if isinstance(m, LoRALinear) and m.merged]
    for layer in merged:
        layer.unmerge()
    with torch.no_grad():
        for name, value in tensors.items():
            p = params[name]
            if name in packed:
                p[unions[id(p)]] = value.to(p.device, p.dtype)
            else:
                p.copy_(value)
    for layer in merged:
        layer.merge()
    return model


def export_peft(model: nn.Module, out_dir: str | os.PathLike) -> None:
    """A stock PEFT LoRA adapter of rank d*r (lora_alpha = d*alpha keeps the scaling) that
    ``peft.PeftModel.from_pretrained(base_model, out_dir)`` loads; same outputs at inference.

    Slices of a fused projection (q and v of a ViT's qkv or GPT-2's c_attn) become one PEFT LoRA on
    the whole projection: A stacks the parts' factors, B is block-diagonal in their output rows (zero
    on k), so it has rank parts*d*r (``rank_pattern``/``alpha_pattern`` keep the scaling).
    """
    from peft import LoraConfig, get_peft_model

    model = unwrap(model)
    cfg = _config(model)
    if cfg.method != "lora":
        raise ValueError(f"export_peft supports method='lora' only, not {cfg.method!r}")
    groups = _projections({n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)})
    plain = copy.deepcopy(model)
    del plain.capaboost_config
    for name in groups:
        parent, _, child = name.rpartition(".")
        base = plain.get_submodule(name)
        while isinstance(base, LoRALinear):
            base.unmerge()
            base = base.base_layer
        setattr(plain.get_submodule(parent) if parent else plain, child, base)
    wide = {name: len(parts) for name, parts in groups.items() if len(parts) > 1}
    peft_model = get_peft_model(plain, LoraConfig(
        r=cfg.d * cfg.r, lora_alpha=cfg.d * cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(groups),
        rank_pattern={n: k * cfg.d * cfg.r for n, k in wide.items()},
        alpha_pattern={n: k * cfg.d * cfg.alpha for n, k in wide.items()},
        fan_in_fan_out=any(m.fan_in_fan_out for parts in groups.values() for m in parts),
        modules_to_save=list(cfg.modules_to_save or ()) or None))
    with torch.no_grad():
        for name, parts in groups.items():
            target = peft_model.base_model.model.get_submodule(name)
            a, b = _block_factors(parts)
            target.lora_A["default"].weight.copy_(a)
            target.lora_B["default"].weight.copy_(b)
    peft_model.save_pretrained(str(out_dir))


def _projections(layers: dict[str, LoRALinear]) -> dict[str, list[LoRALinear]]:
    """Outermost wrapper's name -> the LoRA layers on that one projection (one per fused slice)."""
    groups: dict[str, list[LoRALinear]] = {}
    for name, layer in layers.items():
        root = name
        while root.endswith(".base_layer") and root.removesuffix(".base_layer") in layers:
            root = root.removesuffix(".base_layer")
        groups.setdefault(root, []).append(layer)
    return groups


def _block_factors(parts: list[LoRALinear]) -> tuple[torch.Tensor, torch.Tensor]:
    """(A [k*d*r, in], B [out, k*d*r]) with B * A = sum of the parts' delta W / scaling, each in its rows."""
    stacked = [part.stacked() for part in parts]
    a = torch.cat([s[0] for s in stacked])
    b = a.new_zeros(parts[0].shape[0], a.shape[0])
    col = 0
    for part, (_, part_b) in zip(parts, stacked, strict=True):
        b[part.rows[0]:part.rows[1], col:col + part_b.shape[1]] = part_b
        col += part_b.shape[1]
    return a, b
