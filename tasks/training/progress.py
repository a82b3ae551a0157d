"""Progress as one log line every ``trainer.progress_every_s`` seconds where stdout is not a terminal.

tqdm redraws its bar with carriage returns: in a SLURM log file that is thousands of partial lines per
run. On a terminal the Trainer's bars stay; elsewhere (a batch job, a pipe) this callback replaces them
and the Trainer's printer of raw log dicts, with lines a person can read: step, epoch, loss, speed and
time left.
"""
from __future__ import annotations

import sys
import time
from typing import Any

from transformers import TrainerCallback


def bars() -> bool:
    """tqdm bars only on a terminal."""
    return sys.stdout.isatty()


def quiet_libraries() -> None:
    """No bars from ``datasets`` (tokenising) or the hub client (downloads) in a batch log either."""
    import datasets
    import huggingface_hub

    datasets.disable_progress_bars()
    huggingface_hub.utils.disable_progress_bars()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


class ProgressLines(TrainerCallback):
    """``progress step 120/4000 (3.0%) epoch 0.60/20 loss 0.5123 lr 4.1e-04 2.31 step/s, 27m59s left``."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.loss: float | None = None
        self.lr: float | None = None
        self._start = self._last = 0.0
        self._first_step = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._start = self._last = time.monotonic()
        self._first_step = state.global_step  # a resumed run counts its speed from where it resumed
        if state.is_world_process_zero:
            print(f"progress: {state.max_steps} steps, from step {state.global_step}; a line every "
                  f"{self.every_s:g} s", flush=True)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        logs = logs or {}
        self.loss = logs.get("loss", self.loss)
        self.lr = logs.get("learning_rate", self.lr)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        now = time.monotonic()
        last = state.global_step >= state.max_steps
        if not state.is_world_process_zero or (now - self._last < self.every_s and not last):
            return
        self._last = now
        done = state.global_step - self._first_step
        rate = done / max(now - self._start, 1e-9)
        left = (state.max_steps - state.global_step) / rate if rate > 0 else float("nan")
        epochs = f" epoch {state.epoch:.2f}/{args.num_train_epochs:g}" if state.epoch is not None else ""
        loss = f" loss {self.loss:.4f}" if self.loss is not None else ""
        lr = f" lr {self.lr:.1e}" if self.lr is not None else ""
        print(f"progress step {state.global_step}/{state.max_steps} "
              f"({100 * state.global_step / max(state.max_steps, 1):.1f}%){epochs}{loss}{lr} "
              f"{rate:.2f} step/s, {_duration(left) if left == left else '?'} left", flush=True)
