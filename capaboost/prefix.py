"""CapaBoost prefix tuning -- our definition (the official repo has no CapaBoost prefix code).

Prefix tuning (Li & Liang) trains ``prefix_length`` embeddings that a reparameterisation
MLP, hidden -> prefix_hidden -> tanh -> 2 * layers * hidden, turns into every layer's past
keys and values. CapaBoost masks that MLP's two weight matrices with d static masks and
sums the d branches, exactly as for the adapter (``MaskedBottleneck`` with tanh); the prefix
embeddings themselves are unmasked. The key/value route is PEFT's, so only backbones with
past-key-value support (RoBERTa, BERT) are accepted; the model comes back as a PeftModel.

Token positions stay those of the model without a prefix, as in the official implementation
(adapter-transformers injects keys/values inside attention): transformers numbers positions
after the past length, so the embeddings are told the past is empty.
"""
from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from .adapter import MaskedBottleneck
from .config import CapaBoostConfig
from .masks import site_masks

_TASK_TYPES = {"ForSequenceClassification": "SEQ_CLS", "ForQuestionAnswering": "QUESTION_ANS",
               "ForTokenClassification": "TOKEN_CLS"}
SITE = "prompt_encoder.default.transform"
_PAST = "past_key_values_length"


def apply_prefix(model: nn.Module, cfg: CapaBoostConfig, heads: tuple[str, ...]) -> nn.Module:
    from peft import PrefixTuningConfig, get_peft_model

    hidden, layers = model.config.hidden_size, model.config.num_hidden_layers
    masks = (site_masks(cfg, (cfg.prefix_hidden, hidden), SITE, "down"),
             site_masks(cfg, (2 * layers * hidden, cfg.prefix_hidden), SITE, "up"))
    name = type(model).__name__
    peft_model = get_peft_model(model, PrefixTuningConfig(
        task_type=peft_task_type(model), num_virtual_tokens=cfg.prefix_length, prefix_projection=True,
        encoder_hidden_size=cfg.prefix_hidden, modules_to_save=list(heads) or None))
    encoder = peft_model.prompt_encoder["default"]
    down, _, up = encoder.transform
    encoder.transform = MaskedBottleneck.from_linears(down, up, *masks, nn.Tanh())
    embeddings = [m for m in model.modules() if _PAST in inspect.signature(m.forward).parameters]
    if not embeddings:
        raise ValueError(f"method='prefix': no embeddings module of {name} takes {_PAST}, so token "
                         f"positions could not be kept unshifted")
    for module in embeddings:
        module.register_forward_pre_hook(_positions_without_prefix, with_kwargs=True)
    return peft_model


def peft_task_type(model: nn.Module) -> str:
    """PEFT's task type for a transformers model with a task head (by its class name)."""
    name = type(model).__name__
    return next((t for suffix, t in _TASK_TYPES.items() if name.endswith(suffix)), "FEATURE_EXTRACTION")


def _positions_without_prefix(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict]:
    return args, {**kwargs, _PAST: 0}


def prompt_encoder(model: nn.Module) -> nn.Module | None:
    encoders = getattr(model, "prompt_encoder", None)
    return encoders["default"] if isinstance(encoders, nn.ModuleDict) and "default" in encoders else None


def prefix_inference_size(model: nn.Module) -> int | None:
    """Entries of the keys/values the prefix becomes (prefix_length x 2 x layers x hidden): all that
    inference needs once the reparameterisation MLP has been run; None without a prefix."""
    encoder = prompt_encoder(model)
    if encoder is None:
        return None
    return encoder.embedding.num_embeddings * encoder.transform.up_weight.shape[0]
