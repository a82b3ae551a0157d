"""What a task suite hands the common runner (tasks.runner): the model, data, evaluation and selection."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from transformers import TrainerCallback

from tasks.config.runspec import RunSpec
from tasks.training.evaluation import EvalSplit


@dataclass
class Job:
    """What a task family (tasks/suites/glue.py, squad.py, vtab.py) hands the common runner."""
    model: nn.Module                   # backbone + task head, no PEFT yet
    train: Any
    evals: dict[str, EvalSplit]        # "report", "select" (unless aliased), "report_<suffix>" extras
    collator: Callable
    label_names: list[str]
    select_score: Callable[[dict[str, float]], float]
    selection_metric: str
    aliases: dict[str, str] = field(default_factory=dict)   # {"select": "report"}: same data, eval once
    # Generation-based tasks (tasks/suites/math.py) evaluate with their own callback instead of
    # EpochEvaluation
    # (it logs eval_<split>_<metric> the same way), read the data in order ("sequential": the task has
    # ordered it) and add to result.json / write more files before it is written (``finish``).
    evaluator: TrainerCallback | None = None
    train_sampling: str = "random"
    finish: Callable[[dict[str, Any], Path], None] | None = None
    frozen_dtype: str | None = None  # the task fixes the frozen weights' dtype (math: bf16 without AMP)


def data_source(spec: RunSpec) -> str:
    data = spec.config["data"]
    return data["path"] if data["source"] == "path" else data["source"]

