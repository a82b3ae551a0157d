"""CapaBoost (ICLR 2024): d static random masks over one shared PEFT weight.

    import capaboost
    model = capaboost.apply(model, capaboost.CapaBoostConfig(method="lora", d=2, density=0.5))

Names load on first use, so ``capaboost.config`` and ``capaboost.backbones`` import without torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "CapaBoostConfig": "config", "apply": "model", "count_parameters": "model", "merge": "model",
    "unmerge": "model", "merge_and_unload": "model", "peft_modules": "model", "save": "io", "load": "io",
    "export_peft": "io", "LoRALinear": "lora", "MaskedBottleneck": "adapter", "PfeifferOutput": "adapter",
    "PfeifferMlp": "adapter", "mask_digest": "digest",
}
_MODULES = ("masks", "analysis", "backbones", "config")
__all__ = [*_WHERE, "masks", "analysis", "backbones"]
__version__ = "0.2.0"


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    elif name in _MODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE, *_MODULES])
