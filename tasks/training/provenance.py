"""Where a result came from: code version, package versions, and the W&B run it is logged to."""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import uuid
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

import capaboost
from tasks import ROOT as REPO
from tasks.config.identity import digest
from tasks.config.runspec import RunSpec
from tasks.files import write_text
from tasks.result import WANDB_ID

WANDB_STEP = "wandb_step.json"


def run_name(spec: RunSpec) -> str:
    return f"{spec.task}|{spec.model}|{spec.peft}|d{spec.d}|p{spec.density:g}|{spec.mask}|s{spec.seed}"


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version(), "capaboost": capaboost.__version__}
    for pkg in ("torch", "transformers", "peft", "datasets", "timm", "accelerate", "hydra-core", "wandb"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def start_wandb(spec: RunSpec, run_dir: Path, checkpoint: str | None = None) -> Any:
    """Offline by default (files under <run_dir>/wandb); the id lives in the run dir so a resumed run
    continues the same W&B run; the group is the config without the training seed.

    Offline, W&B cannot resume: each restart opens a new segment whose step counter starts at 0. So
    each checkpoint records the counter (``WandbStep``) and a resumed segment continues at that step:
    one run, one step axis (merge the segments with ``wandb sync --append``). Rows a kill did not let
    W&B write are not lost: the resumed segment first logs again, from the checkpoint's own log history,
    every row W&B does not report having (``replay``)."""
    logger = spec.config["logger"]
    import wandb

    id_file = run_dir / WANDB_ID
    run_id = id_file.read_text().strip() if id_file.is_file() else (
        digest(spec.run_dir, 16) + ("-" + uuid.uuid4().hex[:6] if spec.force else ""))
    write_text(id_file, run_id)
    os.environ["WANDB_MODE"] = logger["mode"]
    run = wandb.init(project=logger["project"], entity=logger["entity"], id=run_id, resume="allow",
                     group=spec.group, name=run_name(spec), dir=str(run_dir), mode=logger["mode"],
                     config=spec.config, job_type=spec.task)
    if checkpoint:
        at = replay(run, Path(checkpoint))
        if run.step <= at["step"]:
            run.log({"train/resumed_at_step": at["global_step"]}, step=at["step"], commit=False)
    return run


# Logged by transformers' WandbCallback into the run summary, not as history rows.
_SUMMARY_ONLY = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss",
                 "total_flos")


def replay(run: Any, checkpoint: Path) -> dict[str, int]:
    """Log again the checkpoint's ``log_history`` rows from the first step W&B does not have
    (``run.step``: 0 for a new offline segment, the server's next step online), each at its own W&B
    step and keyed as transformers' WandbCallback keyed it. Returns the checkpoint's W&B counter
    {"step", "global_step"}.

    Each ``Trainer.log`` call is one log-history entry and one W&B row, so entry i was W&B step
    ``step - len(log_history) + i``; a row W&B already has is not sent twice.
    """
    from transformers.integrations.integration_utils import rewrite_logs

    state = json.loads((checkpoint / "trainer_state.json").read_text())
    history = state.get("log_history") or []
    saved = checkpoint / WANDB_STEP
    at = (json.loads(saved.read_text()) if saved.is_file()  # absent: the earlier segment did not log
          else {"step": len(history), "global_step": state.get("global_step", 0)})
    first, have = at["step"] - len(history), run.step
    for i, entry in enumerate(history):
        if first + i < have:
            continue
        row = {k: v for k, v in entry.items() if k != "step" and k not in _SUMMARY_ONLY}
        run.log({**rewrite_logs(row), "train/global_step": entry["step"]}, step=first + i)
    return at


class WandbStep(TrainerCallback):
    """Writes the W&B step counter into each checkpoint; listed before tasks.cluster.checkpoints'
    marker callback, so the marker covers it."""

    def __init__(self, run: Any) -> None:
        self.run = run

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        write_text(folder / WANDB_STEP, json.dumps({"step": self.run.step, "global_step": state.global_step}))
