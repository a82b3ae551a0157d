"""Where each backbone keeps its LoRA targets, FFN outputs and task head, and which methods it takes.

Importable without torch (run.py validates configs against ``BACKBONES`` before importing it).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

ALL_METHODS = ("lora", "padapter", "prefix")
NO_PREFIX = ("lora", "padapter")  # no past-key-value route in transformers/PEFT for prefix tuning
# Decoders: LoRA only. Their FFNs are gated, pre-norm MLPs with no BERT-style output block for the
# Pfeiffer adapter, and CapaBoost-prefix (capaboost/prefix.py) is written for the encoders' key/value
# layout and positions (decoders keep grouped-query caches and number positions after the prefix).
LORA_ONLY = ("lora",)


@dataclass(frozen=True)
class Backbone:
    name: str
    lora_targets: tuple[str, ...]
    adapter_site: str | None   # regex over module names: where the Pfeiffer adapter goes
    adapter_kind: str          # "output" (post-LN BERT-style) | "mlp" (pre-LN ViT)
    heads: tuple[str, ...]     # top-level modules trained alongside the PEFT weights
    methods: tuple[str, ...]   # the base methods capaboost.apply accepts on this backbone
    # a fused projection whose output rows are [q; k; v] in equal thirds: targets "q", "k", "v"
    # adapt its slices with their own A and B; naming the projection itself adapts it whole
    fused_qkv: str | None = None
    decoder: bool = False      # causal LM: classified from its last non-pad token, as the HF classes do

    @property
    def prefix(self) -> bool:
        return "prefix" in self.methods


_BERT_HEADS = ("classifier", "score", "qa_outputs")
_FFN_OUTPUT = r"layer\.\d+\.output$"
BACKBONES = {
    "bert": Backbone("bert", ("query", "value"), _FFN_OUTPUT, "output", _BERT_HEADS, ALL_METHODS),
    "roberta": Backbone("roberta", ("query", "value"), _FFN_OUTPUT, "output", _BERT_HEADS, ALL_METHODS),
    "xlm-roberta": Backbone("xlm-roberta", ("query", "value"), _FFN_OUTPUT, "output", _BERT_HEADS,
                            ALL_METHODS),
    # DeBERTa's pooler is not in the pretrained checkpoint (randomly initialised): train it.
    "deberta-v2": Backbone("deberta-v2", ("query_proj", "value_proj"), _FFN_OUTPUT, "output",
                           _BERT_HEADS + ("pooler",), NO_PREFIX),
    # q and v of the fused qkv, each with its own A and B, as the LoRA paper and VTAB LoRA baselines
    # do; target_modules=("qkv",) is the fused option (one A over the whole projection, k included).
    "timm-vit": Backbone("timm-vit", ("q", "v"), r"blocks\.\d+\.mlp$", "mlp", ("head",), NO_PREFIX,
                         fused_qkv="qkv"),
}
# Llama, Qwen2 and Mistral share the attention names; q_proj, v_proj as PEFT's defaults and benchmark.
_LLAMA = dict(lora_targets=("q_proj", "v_proj"), adapter_site=None, adapter_kind="mlp", heads=("score",),
              methods=LORA_ONLY, decoder=True)
BACKBONES.update({name: Backbone(name, **_LLAMA) for name in ("llama", "qwen2", "mistral")})
# GPT-2's c_attn is a transformers Conv1D (weight [in, 3*hidden]) whose output is [q; k; v]: targets
# "q", "v" adapt its q and v slices as for the ViT; target_modules=("c_attn",) adapts it whole (PEFT's
# default for GPT-2).
BACKBONES["gpt2"] = Backbone("gpt2", ("q", "v"), None, "mlp", ("score",), LORA_ONLY, fused_qkv="c_attn",
                             decoder=True)
UNKNOWN = Backbone("unknown", (), None, "output", _BERT_HEADS + ("head",), NO_PREFIX)


def detect(model: nn.Module) -> Backbone:
    """The backbone of a transformers model (by ``config.model_type``) or a timm ViT."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in BACKBONES:
        return BACKBONES[model_type]
    if type(model).__name__ == "VisionTransformer" and hasattr(model, "blocks"):
        return BACKBONES["timm-vit"]
    return UNKNOWN


def match_suffix(name: str, targets: tuple[str, ...]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def adapter_sites(model: nn.Module, backbone: Backbone) -> list[str]:
    if backbone.adapter_site is None:
        return []
    pattern = re.compile(backbone.adapter_site)
    return [n for n, _ in model.named_modules() if pattern.search(n)]


def present_heads(model: nn.Module, heads: tuple[str, ...]) -> tuple[str, ...]:
    children = dict(model.named_children())
    return tuple(h for h in heads if h in children)
