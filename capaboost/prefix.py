"""CapaBoost prefix tuning -- our definition (the official repo has no CapaBoost prefix code).

Prefix tuning (Li & Liang) trains ``prefix_length`` embeddings that a reparameterisation
MLP, hidden -> prefix_hidden -> tanh -> 2 * layers * hidden, turns into every layer's past
keys and values. CapaBoost masks that MLP's two weight matrices with d static masks and
sums the d branches, exactly as for the adapter (``MaskedBottleneck`` with tanh); the prefix
embeddings themselves are unmasked. The key/value route is PEFT's, so only families with
past-key-value support (RoBERTa, BERT) are accepted; the model comes back as a PeftModel.
"""
from __future__ import annotations

from torch import nn

from .adapter import MaskedBottleneck
from .config import CapaBoostConfig
from .masks import make_masks, mask_seed

_TASK_TYPES = {"ForSequenceClassification": "SEQ_CLS", "ForQuestionAnswering": "QUESTION_ANS",
               "ForTokenClassification": "TOKEN_CLS"}
SITE = "prompt_encoder.default.transform"


def apply_prefix(model: nn.Module, cfg: CapaBoostConfig, heads: tuple[str, ...]) -> nn.Module:
    from peft import PrefixTuningConfig, get_peft_model

    name = type(model).__name__
    task_type = next((t for suffix, t in _TASK_TYPES.items() if name.endswith(suffix)), "FEATURE_EXTRACTION")
    peft_model = get_peft_model(model, PrefixTuningConfig(
        task_type=task_type, num_virtual_tokens=cfg.prefix_length, prefix_projection=True,
        encoder_hidden_size=cfg.prefix_hidden, modules_to_save=list(heads) or None))
    encoder = peft_model.prompt_encoder["default"]
    down, _, up = encoder.transform
    masks = [make_masks(lin.weight.shape, cfg.d, cfg.density, cfg.mask, mask_seed(cfg.seed, SITE, part),
                        cfg.nm_group) for lin, part in [(down, "down"), (up, "up")]]
    encoder.transform = MaskedBottleneck.from_linears(down, up, *masks, nn.Tanh())
    return peft_model
