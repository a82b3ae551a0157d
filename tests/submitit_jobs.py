"""A job for submitit's real local executor (tests/test_lifecycle_faults.py): a tiny run that receives a
signal mid-epoch, with submitit's own signal handlers installed as they are in a SLURM job.
Checkpointable, as the Hydra launcher is: submitit's USR2 handler then resubmits the same call."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import submitit


class SignalledRun(submitit.helpers.Checkpointable):
    def __call__(self, runs_root: str, overrides: list[str], signame: str) -> dict:
        from runs import run
        from transformers import TrainerCallback

        class Signal(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                if state.global_step == 2:   # step 3 starts: the middle of epoch 2
                    os.kill(os.getpid(), getattr(signal, signame))

        return run(overrides, Path(runs_root), callbacks=(Signal(),))
