"""A run whose loss or evaluation metric stops being finite has diverged: it stops there, and its result
says so.

A diverged run is a finished run, not a failed one: the same config and seed diverge the same way again,
so a rerun that resumed (from a checkpoint that may already hold NaN weights) or restarted would loop.
It writes ``result.json`` with ``status: diverged`` (no metrics, no rank: NaN weights have none) and
where it diverged; ``make tables`` lists it among the runs that did not complete, a rerun of the same
command is a no-op, and ``force=true`` starts it over. The Trainer's own NaN filter is turned off for the
logged loss (tasks.runner), so a NaN step shows as NaN instead of the window's mean of the other steps.
"""
from __future__ import annotations

import math
from typing import Any

from transformers import TrainerCallback

# The logged values whose non-finite value means the weights diverged. The gradient norm is left out:
# under fp16 loss scaling an infinite norm is a skipped step, not a divergence.
TRAIN_KEYS = ("loss", "train_loss")


class Diverged(Exception):
    """Raised from the Trainer's log call at the first non-finite loss or metric (before any save)."""

    def __init__(self, step: int, epoch: float | None, key: str, value: float) -> None:
        where = f" (epoch {epoch:.2f})" if epoch is not None else ""
        super().__init__(f"{key}={value} at step {step}{where}")
        self.step, self.epoch, self.key, self.value = step, epoch, key, value

    def record(self) -> dict[str, Any]:
        """What result.json says about it (strict JSON: the value as text)."""
        return {"step": self.step, "epoch": self.epoch, "key": self.key, "value": str(self.value)}


class Divergence(TrainerCallback):
    """Checks every logged training loss and every evaluation metric (``eval_*``) for NaN and infinity."""

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        for key, value in (logs or {}).items():
            watched = key in TRAIN_KEYS or key.startswith("eval_")
            if watched and isinstance(value, int | float) and not math.isfinite(value):
                raise Diverged(state.global_step, state.epoch, key, value)


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None, for strict JSON (nested dicts and lists)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    return value
