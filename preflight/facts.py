"""The data files next to this module (architectures, GPUs), read once; dataset sizes are task facts
(tasks/facts/)."""
from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent


@cache
def load(name: str) -> dict[str, Any]:
    """``architectures`` | ``gpus``: the parsed YAML file."""
    with open(HERE / f"{name}.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)


def architecture(model: str) -> dict[str, Any]:
    archs = load("architectures")
    if model not in archs:
        raise KeyError(f"no architecture facts for model={model!r} in preflight/architectures.yaml "
                       f"(known: {', '.join(archs)})")
    return archs[model]


def gpu(name: str) -> dict[str, Any]:
    gpus = load("gpus")["gpus"]
    if name not in gpus:
        raise KeyError(f"GPU={name!r} is not in preflight/gpus.yaml; choose one of {', '.join(gpus)}")
    return gpus[name]
