"""A run whose weights or evaluation metrics stop being finite has diverged: it stops there, and its
result says so.

A diverged run is a finished run, not a failed one: the same config and seed diverge the same way again,
so a rerun that resumed (from a checkpoint that may already hold NaN weights) or restarted would loop.
It writes ``result.json`` with ``status: diverged`` (no metrics, no rank: NaN weights have none) and
where it diverged; ``make tables`` lists it among the runs that did not complete, a rerun of the same
command is a no-op, and ``force=true`` starts it over.
"""
from __future__ import annotations

import math
from typing import Any

from transformers import TrainerCallback


class Diverged(Exception):
    """Raised from the Trainer's log call at the first non-finite weight or metric (before any save)."""

    def __init__(self, step: int, epoch: float | None, key: str, value: float) -> None:
        where = f" (epoch {epoch:.2f})" if epoch is not None else ""
        super().__init__(f"{key}={value} at step {step}{where}")
        self.step, self.epoch, self.key, self.value = step, epoch, key, value

    def record(self) -> dict[str, Any]:
        """What result.json says about it (strict JSON: the value as text)."""
        return {"step": self.step, "epoch": self.epoch, "key": self.key, "value": str(self.value)}


class Divergence(TrainerCallback):
    """At every log call: the evaluation metrics (``eval_*``), and at a training log the trainable
    weights, must be finite.

    The weights, not the logged training loss: the Trainer averages NaN losses away in its log (its
    ``logging_nan_inf_filter``, kept on because under fp16 an infinite loss is a step the loss scaler
    skips, not a divergence), while a non-finite weight is one in any precision (a skipped step
    changes none). The trainable tensors are the PEFT weights and the head: checking them is cheap.
    """

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        logs = logs or {}
        for key, value in logs.items():
            if key.startswith("eval_") and isinstance(value, int | float) and not math.isfinite(value):
                raise Diverged(state.global_step, state.epoch, key, value)
        model = kwargs.get("model")
        if model is None or any(key.startswith("eval_") for key in logs):
            return
        import torch

        for name, p in model.named_parameters():
            if p.requires_grad and not bool(torch.isfinite(p).all()):
                raise Diverged(state.global_step, state.epoch, f"weight {name}", math.nan)


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None, for strict JSON (nested dicts and lists)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    return value
