"""Where each model family keeps its LoRA targets, FFN outputs and task head."""
from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Family:
    name: str
    lora_targets: tuple[str, ...]
    adapter_site: str | None  # regex over module names: where the Pfeiffer adapter goes
    adapter_kind: str          # "output" (post-LN BERT-style) | "mlp" (pre-LN ViT)
    heads: tuple[str, ...]     # top-level modules trained alongside the PEFT weights
    prefix: bool               # has PEFT's past-key-value route for prefix tuning


_BERT_HEADS = ("classifier", "score", "qa_outputs")
FAMILIES = {
    "bert": Family("bert", ("query", "value"), r"layer\.\d+\.output$", "output", _BERT_HEADS, True),
    "roberta": Family("roberta", ("query", "value"), r"layer\.\d+\.output$", "output", _BERT_HEADS, True),
    "xlm-roberta": Family("xlm-roberta", ("query", "value"), r"layer\.\d+\.output$", "output",
                          _BERT_HEADS, True),
    # DeBERTa's pooler is not in the pretrained checkpoint (randomly initialised): train it.
    "deberta-v2": Family("deberta-v2", ("query_proj", "value_proj"), r"layer\.\d+\.output$", "output",
                         _BERT_HEADS + ("pooler",), False),
    "timm-vit": Family("timm-vit", ("qkv",), r"blocks\.\d+\.mlp$", "mlp", ("head",), False),
}
UNKNOWN = Family("unknown", (), None, "output", _BERT_HEADS + ("head",), False)


def detect(model: nn.Module) -> Family:
    """The family of a transformers model (by ``config.model_type``) or a timm ViT."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    if type(model).__name__ == "VisionTransformer" and hasattr(model, "blocks"):
        return FAMILIES["timm-vit"]
    return UNKNOWN


def match_suffix(name: str, targets: tuple[str, ...]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def adapter_sites(model: nn.Module, family: Family) -> list[str]:
    if family.adapter_site is None:
        return []
    pattern = re.compile(family.adapter_site)
    return [n for n, _ in model.named_modules() if pattern.search(n)]


def present_heads(model: nn.Module, heads: tuple[str, ...]) -> tuple[str, ...]:
    children = dict(model.named_children())
    return tuple(h for h in heads if h in children)
