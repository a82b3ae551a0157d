"""Today's PEFT methods as baselines, built by huggingface/peft itself: DoRA, rsLoRA, PiSSA, VeRA, LoHa,
AdaLoRA.

They are the harness's, not the method's: capaboost/ stays CapaBoost. Each baseline is attached with
``peft.get_peft_model`` on the LoRA targets of the backbones table (a target that is a third of a fused
qkv projection becomes the whole projection: PEFT has no row slices), shares the LoRA recipe of the task,
and is counted in ``capaboost.count_parameters``' keys so tables and paired verdicts treat it as any row.
Their table (names, PEFT spellings, settings) is plain data in tasks/config/methods.py, which config
validation reads before torch is imported; this module builds, counts and saves them.
"""
from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from capaboost.backbones import Backbone
from tasks.config.methods import (  # noqa: F401  (the table's one address; these names re-exported)
    ADALORA_DEFAULT_INIT_R,
    BASE_METHOD,
    BASELINES,
    SCHEDULE_OPTIONS,
    Baseline,
    base_method,
    is_baseline,
    settings,
)
from tasks.result import ADAPTER_DIR

if TYPE_CHECKING:
    from torch import nn
    from transformers import TrainerCallback

WEIGHTS_DIR = ADAPTER_DIR  # a stock PEFT adapter (save_pretrained), beside result.json


def targets(backbone: Backbone, requested: list[str] | tuple[str, ...] | None) -> list[str]:
    """PEFT target_modules: the backbones table's LoRA targets (or the requested ones); a q/k/v part
    of a fused projection becomes the fused projection, adapted whole (PEFT has no row slices)."""
    names = list(requested) if requested is not None else list(backbone.lora_targets)
    if backbone.fused_qkv:
        names = [backbone.fused_qkv if n in ("q", "k", "v") else n for n in names]
    if not names:
        raise ValueError(f"backbone {backbone.name!r} has no LoRA targets in capaboost.backbones: "
                         f"set peft.target_modules")
    return list(dict.fromkeys(names))


# --- torch from here on -----------------------------------------------------------------------------------

def peft_config(cfg: dict[str, Any], target_modules: list[str], heads: tuple[str, ...],
                task_type: str | None) -> Any:
    """The PEFT config object for these settings, as PEFT spells them."""
    import peft

    b = BASELINES[cfg["method"]]
    kwargs: dict[str, Any] = dict(b.fixed)
    kwargs.update({k: v for k, v in cfg["options"].items() if k not in SCHEDULE_OPTIONS})
    for key, value in ((b.r_key, cfg["r"]), (b.alpha_key, cfg["alpha"]), (b.dropout_key, cfg["dropout"])):
        if key is not None:
            kwargs[key] = value
    if cfg["method"] == "adalora":
        kwargs["total_step"] = 1  # placeholder: AdaLoraSchedule sets the Trainer's real count at train begin
    return getattr(peft, b.config_class)(target_modules=target_modules, modules_to_save=list(heads) or None,
                                         task_type=task_type, **kwargs)


def attach(model: nn.Module, cfg: dict[str, Any]) -> nn.Module:
    """``peft.get_peft_model`` with these settings on the backbone's targets, its task heads trained."""
    from peft import get_peft_model

    from capaboost import backbones
    from capaboost.prefix import peft_task_type

    bb = backbones.detect(model)
    requested = cfg.get("modules_to_save")
    heads = tuple(requested) if requested is not None else backbones.present_heads(model, bb.heads)
    task_type = peft_task_type(model)
    return get_peft_model(model, peft_config(cfg, targets(bb, cfg["target_modules"]), heads,
                                             None if task_type == "FEATURE_EXTRACTION" else task_type))


def _tuner_layers(model: nn.Module) -> dict[str, nn.Module]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return {n: m for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)
            and hasattr(m, "get_delta_weight")}


def _adalora(model: nn.Module) -> tuple[Any, Any] | None:
    """(the AdaLoraModel tuner, its config) when ``model`` holds AdaLoRA, else None."""
    for module in model.modules():
        if type(module).__name__ == "AdaLoraModel":
            return module, module.peft_config[module.trainable_adapter_name]
    return None


def kept_ranks(model: nn.Module) -> dict[str, int]:
    """AdaLoRA: each layer's ranks left by pruning (all ``init_r`` before the first allocation)."""
    found = _adalora(model)
    if found is None:
        return {}
    tuner, config = found
    adapter, pattern = tuner.trainable_adapter_name, config.rank_pattern or {}
    out = {}
    for name, layer in _tuner_layers(tuner.model).items():
        mask = pattern.get(f"{name}.lora_E.{adapter}", pattern.get(f"{name}.lora_E"))
        out[name] = int(sum(mask)) if mask is not None else int(layer.r[adapter])
    return out


def count_parameters(model: nn.Module) -> dict[str, int]:
    """``capaboost.model.tally`` (the counting rule of every row) of a PEFT-built model. peft: the PEFT
    weights that train, task heads (PEFT's modules_to_save copies) excluded: VeRA's vectors, not its frozen
    projections; DoRA's magnitudes with A and B. AdaLoRA: its budget after pruning, sum over layers of kept
    ranks x (in + out + 1) (a row of A, a column of B, an entry of E), with ``peft_initial`` the budget at
    init_r."""
    from capaboost.model import tally, unwrap

    model = unwrap(model)
    named = dict(model.named_parameters())
    # PEFT keeps a frozen original beside each trained head copy: counted once, as our models
    out = tally([p for n, p in named.items() if ".original_module." not in n],
                [p for n, p in named.items() if p.requires_grad and ".modules_to_save." not in n])
    found = _adalora(model)
    if found is not None:
        layers = _tuner_layers(found[0].model)
        out["peft_initial"] = out["peft"]
        out["peft"] = sum(k * (layers[n].in_features + layers[n].out_features + 1)
                          for n, k in kept_ranks(model).items())
    return out


def rank_summary(model: nn.Module) -> dict[str, float] | None:
    """Measured rank of every layer's delta W as PEFT computes it (``get_delta_weight``: for DoRA the
    low-rank direction update B A, without the magnitude rescale), with the method's bound."""
    import torch

    from capaboost.analysis import numerical_rank
    from capaboost.model import unwrap

    layers = _tuner_layers(unwrap(model))
    if not layers:
        return None
    ranks, bounds = [], []
    for layer in layers.values():
        adapter = layer.active_adapters[0]
        with torch.no_grad():
            delta = layer.get_delta_weight(adapter)
        ranks.append(numerical_rank(delta))
        r = int(layer.r[adapter])  # AdaLoRA: init_r
        bounds.append(min(r * r if _hadamard(layer) else r, *delta.shape))
    return {"min": min(ranks), "mean": sum(ranks) / len(ranks), "max": max(ranks), "bound": min(bounds)}


def _hadamard(layer: nn.Module) -> bool:
    """LoHa: delta W is the Hadamard product of two rank-r products, so rank <= r^2."""
    return ".loha." in type(layer).__module__


def save(model: nn.Module, out_dir: str | os.PathLike) -> None:
    """PEFT's own ``save_pretrained`` (loads with ``PeftModel.from_pretrained``), written to a temporary
    directory and renamed into place, so a kill leaves the old adapter or the new one, never half."""
    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


def schedule_steps(options: dict[str, Any], total: int) -> tuple[int, int]:
    """(tinit, tfinal) in steps from their fractions of ``total``; at least one budgeting step."""
    tinit = math.floor(options.get("tinit_ratio", 0.0) * total)
    tfinal = math.floor(options.get("tfinal_ratio", 0.0) * total)
    while tinit + tfinal >= total and (tinit or tfinal):  # tiny runs: shrink the longer phase
        tinit, tfinal = (tinit - 1, tfinal) if tinit >= tfinal else (tinit, tfinal - 1)
    return tinit, tfinal


def adalora_callback(model: nn.Module, options: dict[str, Any]) -> TrainerCallback | None:
    """The Trainer callback AdaLoRA needs (None for other models): PEFT leaves ``update_and_allocate``
    to the training loop, and transformers' Trainer does not call it."""
    from transformers import TrainerCallback

    found = _adalora(model)
    if found is None:
        return None
    tuner, config = found

    class AdaLoraSchedule(TrainerCallback):
        """At train begin: total_step (the Trainer's own count, ``state.max_steps``), tinit and tfinal.
        After each optimizer step, before the gradients are zeroed: PEFT's rank allocation."""

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            config.total_step = state.max_steps
            config.tinit, config.tfinal = schedule_steps(options, state.max_steps)
            tuner.rankallocator.set_total_step(state.max_steps)

        def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            step = state.global_step + 1  # this step's number, 1..total_step
            if config.rank_pattern is None and step > config.total_step - config.tfinal:
                config.rank_pattern = _pattern_from_zeros(tuner)  # resumed after the final allocation
            tuner.update_and_allocate(step)

    return AdaLoraSchedule()


def _pattern_from_zeros(tuner: Any) -> dict[str, list[bool]]:
    """The final rank pattern from the checkpointed weights: pruned entries of E are exactly zero (the
    pattern itself lives in the PEFT config, which a Trainer checkpoint does not hold)."""
    adapter = tuner.trainable_adapter_name
    return {n: (p != 0).view(-1).tolist() for n, p in tuner.model.named_parameters()
            if f"lora_E.{adapter}" in n}
