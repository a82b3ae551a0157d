"""The run's real architecture with its PEFT method, built on fake tensors: shapes without weights.

The backbone comes from its architecture facts (architectures.yaml) or, for ``model=tiny``, from the
config; the PEFT method is attached by the runner's own ``attach_peft`` (CapaBoost, or a PEFT-library
baseline through ``peft.get_peft_model``), so what is counted and traced is what would train. It is
built on the meta device (no memory, no init cost), then every parameter and buffer becomes a fake CPU
tensor, which autocast and autograd can trace (preflight/trace.py).
Meta tensors carry no values, so the masks are drawn for real (they are small) on the side: their
unions give the paper's effective parameter count; meta copies go into the model.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

import capaboost
import capaboost.model
import capaboost.prefix
from preflight import facts


@dataclass
class Built:
    model: nn.Module                       # backbone + head + PEFT, fake tensors
    counts: dict[str, int]                 # peft, effective, trainable, total
    make_batch: Callable[[int, int], dict[str, torch.Tensor]]   # (batch, seq) -> fake inputs
    mode: FakeTensorMode


@contextlib.contextmanager
def _real_masks(drawn: dict[int, torch.Tensor]) -> Iterator[None]:
    """Masks drawn for real (capaboost's own make_masks) while the weights stay on the meta device:
    capaboost gets a meta twin (so it places it like any mask), ``drawn`` maps the twin to the real one."""
    original = capaboost.masks.make_masks

    def draw(shape: Any, d: int, *args: Any, **kwargs: Any) -> torch.Tensor:
        with torch.device("cpu"):
            real = original(shape, d, *args, **kwargs)
        twin = real.to("meta")
        drawn[id(twin)] = (twin, real)  # the twin kept alive: its id stays unique
        return twin

    users = (capaboost.model, capaboost.prefix)
    for module in users:
        module.make_masks = draw
    try:
        yield
    finally:
        for module in users:
            module.make_masks = original


def _put_real_masks(model: nn.Module, drawn: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Swap each meta mask buffer for its real twin, so ``capaboost.count_parameters`` counts the exact
    mask unions (the weights stay meta: no weight memory)."""
    for module in model.modules():
        for name, buf in module._buffers.items():
            if buf is not None and id(buf) in drawn and drawn[id(buf)][0] is buf:
                module._buffers[name] = drawn[id(buf)][1]


def num_outputs(spec: Any) -> int:
    from tasks.facts.glue import GLUE
    from tasks.facts.vtab import VTAB

    if spec.family == "glue":
        return GLUE[spec.dataset].num_labels
    if spec.family == "vtab":
        return VTAB[spec.dataset].num_classes
    return 2  # squad: start and end logits


def _text_config(model_cfg: dict[str, Any], labels: int) -> Any:
    import transformers

    kw = {"num_labels": labels}
    if model_cfg["kind"] == "tiny":  # the runner's own tiny architecture, at its full vocabulary
        from tasks.training.models import SPECIALS, tiny_text_config

        ids = [SPECIALS.index(t) for t in ("<pad>", "<s>", "</s>")]
        return tiny_text_config(model_cfg, model_cfg["vocab_size"], 4094, *ids, **kw)
    arch = facts.architecture(model_cfg["name"])
    return getattr(transformers, arch["config_class"])(**arch["config"], **kw)


def _image_model(model_cfg: dict[str, Any], classes: int) -> nn.Module:
    from tasks.training.models import TimmClassifier, load_image

    if model_cfg["kind"] == "tiny":
        return load_image(model_cfg, classes)[0]
    import timm

    arch = facts.architecture(model_cfg["name"])
    vit = timm.create_model(arch["timm_name"], pretrained=False, num_classes=classes)
    f = arch["facts"]
    built = {"embed_dim": vit.embed_dim, "depth": len(vit.blocks), "num_heads": vit.blocks[0].attn.num_heads,
             "mlp_hidden": vit.blocks[0].mlp.fc1.out_features, "patch_size": vit.patch_embed.patch_size[0],
             "img_size": vit.patch_embed.img_size[0]}
    if built != f:
        raise ValueError(f"timm {arch['timm_name']} built {built}, architectures.yaml says {f}")
    return TimmClassifier(vit)


def _batch_maker(spec: Any, model_cfg: dict[str, Any], labels: int) -> Callable[[int, int], dict]:
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
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForQuestionAnswering,
        AutoModelForSequenceClassification,
    )

    from tasks.facts.math import frozen_dtype
    from tasks.training.models import ready_for_training
    from tasks.training.peft import attach_peft, count_parameters

    model_cfg, labels = spec.config["model"], num_outputs(spec)
    drawn: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    with torch.device("meta"), _real_masks(drawn):
        if spec.modality == "image":
            model = _image_model(model_cfg, labels)
        else:
            qa = spec.family == "squad"
            head = AutoModelForQuestionAnswering if qa else AutoModelForSequenceClassification
            head = AutoModelForCausalLM if spec.family == "math" else head  # generation tasks: the LM head
            model = head.from_config(_text_config(model_cfg, labels))
        model, peft_root = attach_peft(model, spec)
        frozen = frozen_dtype(model_cfg) if spec.family == "math" else None
        ready_for_training(model, spec.backbone, precision, spec.config["trainer"]["gradient_checkpointing"],
                           frozen=frozen)
    _put_real_masks(model, drawn)
    _adapter_always_applied(model)
    numbers = count_parameters(model, spec)  # a PEFT-library baseline: tasks.training.baselines' count
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    to_fake(model, mode)
    return Built(model, numbers, _batch_maker(spec, model_cfg, labels), mode)


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
