"""The run's real architecture with its PEFT method, built on fake tensors: shapes without weights.

The backbone comes from its architecture facts (architectures.yaml) or, for ``model=tiny``, from the
config; the PEFT method is attached by the runner's own ``attach_peft`` (CapaBoost, or a PEFT-library
baseline through ``peft.get_peft_model``), so what is counted and traced is what would train. It is
built on the meta device (no memory, no init cost), then every parameter and buffer becomes a fake CPU
tensor, which autocast and autograd can trace (preflight/trace.py).
Meta tensors carry no values, so the masks are drawn for real (they are small) on the side, through
capaboost's public hook ``capaboost.masks.mask_maker``: their unions give the paper's effective
parameter count; meta copies go into the model while it is built.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

import capaboost
import capaboost.masks
from preflight import facts


@dataclass
class Built:
    model: nn.Module                       # backbone + head + PEFT, fake tensors
    counts: dict[str, int]                 # peft, effective, trainable, total
    make_batch: Callable[[int, int], dict[str, torch.Tensor]]   # (batch, seq) -> fake inputs
    mode: FakeTensorMode


class RealMasks:
    """A ``capaboost.masks.mask_maker`` for a model built on the meta device: each mask is drawn for real
    on the CPU (capaboost's own ``make_masks``, they are small) and capaboost gets a meta twin, which it
    places like any mask; ``put_back`` then swaps every twin for its real mask, so
    ``capaboost.count_parameters`` counts the exact mask unions (the weights stay meta: no memory)."""

    def __init__(self) -> None:
        self.drawn: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id(twin) -> (twin, real)

    def __call__(self, shape: Any, d: int, *args: Any) -> torch.Tensor:
        with torch.device("cpu"):
            real = capaboost.masks.make_masks(shape, d, *args)
        twin = real.to("meta")
        self.drawn[id(twin)] = (twin, real)  # the twin kept alive: its id stays unique
        return twin

    def put_back(self, model: nn.Module) -> None:
        for module in model.modules():
            for name, buf in module._buffers.items():
                if buf is not None and id(buf) in self.drawn and self.drawn[id(buf)][0] is buf:
                    module._buffers[name] = self.drawn[id(buf)][1]


def num_outputs(spec: Any) -> int:
    from tasks.facts.glue import GLUE
    from tasks.facts.vtab import VTAB

    if spec.family == "glue":
        return GLUE[spec.dataset].num_labels
    if spec.family == "vtab":
        return VTAB[spec.dataset].num_classes
    return 2  # squad: start and end logits


def head(spec: Any) -> str:
    """The task head the runner's suite puts on a text backbone (its facts' ``head``)."""
    from tasks.facts.families import FAMILIES

    return FAMILIES[spec.family].head


def backbone(spec: Any) -> nn.Module:
    """The run's backbone with its task head, random-init, by the runner's own model code
    (tasks.training.models); called under ``torch.device("meta")`` it holds shapes only. A published
    model's sizes come from architectures.yaml (no download); ``model=tiny`` at its full vocabulary."""
    from tasks.training import models

    model_cfg, labels = spec.config["model"], num_outputs(spec)
    if spec.modality == "image":
        model = models.load_image(model_cfg, labels, weights=False)[0]
        if model_cfg["kind"] != "tiny":
            _check_vit(model.vit, model_cfg)
        return model
    if model_cfg["kind"] == "tiny":
        model = models.tiny_text_model(model_cfg, head(spec), model_cfg["vocab_size"],
                                       spec.hparams["max_seq_length"], labels)
    else:
        model = models.from_config(text_config(spec), head(spec))
    # load_text's for_classification: no kv cache, pad with eos where the config has no pad token. The
    # causal LM is traced the same way, as before (the runner's math model keeps its checkpoint's
    # use_cache, and transformers then builds a cache in the training forward: +0.3 GiB traced on
    # Llama-3.2-3B at 4 x 768; left as it was, so the published estimates stand)
    return models.without_cache(model, model.config.eos_token_id)


def text_config(spec: Any) -> Any:
    """The transformers config of a published text model, from its architecture facts."""
    import transformers

    arch = facts.architecture(spec.config["model"]["name"])
    return getattr(transformers, arch["config_class"])(**arch["config"], num_labels=num_outputs(spec))


def _check_vit(vit: nn.Module, model_cfg: dict[str, Any]) -> None:
    f = facts.architecture(model_cfg["name"])["facts"]
    built = {"embed_dim": vit.embed_dim, "depth": len(vit.blocks), "num_heads": vit.blocks[0].attn.num_heads,
             "mlp_hidden": vit.blocks[0].mlp.fc1.out_features, "patch_size": vit.patch_embed.patch_size[0],
             "img_size": vit.patch_embed.img_size[0]}
    if built != f:
        raise ValueError(f"timm {model_cfg['hub_id']} built {built}, architectures.yaml says {f}")


def batch_maker(spec: Any, model_cfg: dict[str, Any], labels: int) -> Callable[[int, int], dict]:
    if spec.modality == "image":
        size = model_cfg.get("image_size") or facts.architecture(model_cfg["name"])["facts"]["img_size"]

        def images(batch: int, seq: int) -> dict[str, torch.Tensor]:
            return {"pixel_values": torch.randn(batch, 3, size, size),
                    "labels": torch.randint(0, labels, (batch,))}
        return images

    def text(batch: int, seq: int) -> dict[str, torch.Tensor]:
        ids = torch.randint(3, 100, (batch, seq))
        out = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if spec.family == "math":  # causal LM: labels are the tokens themselves
            out["labels"] = ids
        elif spec.family == "squad":
            out |= {"start_positions": torch.zeros(batch, dtype=torch.long),
                    "end_positions": torch.zeros(batch, dtype=torch.long)}
        elif labels == 1:
            out["labels"] = torch.zeros(batch)
        elif spec.backbone == "deberta-v2":
            # DeBERTa-v2's integer-label loss selects labelled rows with nonzero(), whose shape fake tensors
            # cannot know; its soft-label branch computes the same loss shape (head-sized, negligible)
            out["labels"] = torch.zeros(batch, labels)
        else:
            out["labels"] = torch.zeros(batch, dtype=torch.long)
        return out
    return text


def build(spec: Any, precision: str = "fp32") -> Built:
    """``spec`` (a tasks.config.runspec.RunSpec) -> its model with PEFT on fake tensors, and its parameter
    counts;
    weights in the dtypes and with the activation checkpointing the runner gives them at ``precision``."""
    from tasks.facts.math import frozen_dtype
    from tasks.training.models import ready_for_training
    from tasks.training.peft import attach_peft, count_parameters

    model_cfg, labels = spec.config["model"], num_outputs(spec)
    masks = RealMasks()
    with torch.device("meta"), capaboost.masks.mask_maker(masks):
        model, _ = attach_peft(backbone(spec), spec)
        frozen = frozen_dtype(model_cfg) if spec.family == "math" else None
        ready_for_training(model, spec.backbone, precision, spec.config["trainer"]["gradient_checkpointing"],
                           frozen=frozen)
    masks.put_back(model)
    _adapter_always_applied(model)
    numbers = count_parameters(model, spec)  # a PEFT-library baseline: tasks.training.baselines' count
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    to_fake(model, mode)
    return Built(model, numbers, batch_maker(spec, model_cfg, labels), mode)


def _adapter_always_applied(model: nn.Module) -> None:
    """PEFT's LoHa decides its module dropout by ``torch.rand(1) > p`` in every training forward, a value
    fake tensors cannot know: such layers are traced on the path that applies the adapter (the costlier
    one, and the only one at p=0), as in eval mode."""
    for module in model.modules():
        if isinstance(getattr(module, "module_dropout", None), dict):
            module.register_forward_pre_hook(lambda m, args: setattr(m, "training", False))


def to_fake(model: nn.Module, mode: FakeTensorMode) -> None:
    """Replace every meta parameter and buffer by a fake CPU tensor (shared tensors stay shared)."""
    cpu, memo = torch.device("cpu"), {}

    def fake(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in memo:
            f = mode.fake_tensor_converter.from_meta_and_device(mode, t, cpu) if t.is_meta \
                else mode.from_tensor(t)  # the real masks
            memo[id(t)] = nn.Parameter(f, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else f
        return memo[id(t)]

    for module in model.modules():
        for table in (module._parameters, module._buffers):
            for name, t in table.items():
                if t is not None:
                    table[name] = fake(t)
