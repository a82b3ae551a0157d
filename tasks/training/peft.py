"""PEFT on a backbone as the Trainer sees it: CapaBoost or a PEFT-library baseline, counted the same way."""
from __future__ import annotations

from typing import Any

from torch import nn

import capaboost
from tasks.config.runspec import RunSpec
from tasks.training import baselines


class TrainerModel(nn.Module):
    """What the Trainer sees: forwards to ``model``; its state_dict holds only trainable tensors.

    The Trainer saves ``state_dict()`` of a non-PreTrainedModel to ``model.safetensors`` and reloads it
    with ``strict=False``; the frozen backbone is rebuilt identically (pretrained or seeded) on resume.
    """

    accepts_loss_kwargs = False  # forward takes **inputs; the Trainer must not add num_items_in_batch

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.register_state_dict_post_hook(_keep_trainable)
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        # Read by Trainer._issue_warnings_after_load: these keys are absent from checkpoints on purpose.
        self._keys_to_ignore_on_save = sorted(f"model.{k}" for k in model.state_dict()
                                              if f"model.{k}" not in trainable)

    def forward(self, **inputs: Any) -> Any:
        return self.model(**inputs)

    def tie_weights(self) -> None:
        """Called by the Trainer after a partial load; the wrapped model's ties never change."""


def _keep_trainable(module: nn.Module, state_dict: dict, prefix: str, local_metadata: Any) -> None:
    trainable = {prefix + n for n, p in module.named_parameters() if p.requires_grad}
    for key in [k for k in state_dict if k.startswith(prefix) and k not in trainable]:
        del state_dict[key]


def attach_peft(model: nn.Module, spec: RunSpec) -> tuple[nn.Module, nn.Module]:
    """(model with PEFT, the module capaboost.apply or peft.get_peft_model returned: what save/count see)."""
    if baselines.is_baseline(spec.method):
        def attach(m: nn.Module) -> nn.Module:
            return baselines.attach(m, spec.capaboost_config)
    else:
        def attach(m: nn.Module) -> nn.Module:
            return capaboost.apply(m, capaboost.CapaBoostConfig(**spec.capaboost_config))
    # tasks.training.models.TimmClassifier: the backbone is detected on the timm model
    if hasattr(model, "vit"):
        model.vit = attach(model.vit)
        return model, model.vit
    peft_root = attach(model)  # prefix and the baselines return PEFT's wrapper: always use the return value
    return peft_root, peft_root


def count_parameters(model: nn.Module, spec: RunSpec) -> dict[str, int]:
    """capaboost.count_parameters, or its twin for PEFT-library baselines (tasks.training.baselines)."""
    count = baselines.count_parameters if baselines.is_baseline(spec.method) else capaboost.count_parameters
    return count(model)
