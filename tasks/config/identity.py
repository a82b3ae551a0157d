"""What makes two runs the same experiment: one definition for run directories, W&B groups and tables.

Two runs are the same experiment when every value that can change their numbers agrees, apart from the
training seed. Settings that only change where or how a run executes (the runs root, logging, progress
bars, data-loader workers, evaluation batch size, device, gradient accumulation at a fixed global batch,
checkpoint cadence) are left out, so a requeued run, a run on another cluster or one launched by a
second sweep finds the same run directory, and tables put it in the same cell.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tasks.config.schema import TrainerConf

# Top-level config keys outside the identity (the sweep that launched a run is recorded, not hashed).
NOT_IDENTITY = ("force", "runs_root", "logger", "recipe", "d", "density", "mask", "mask_seed", "peft",
                "trainer", "sweep")
# Trainer keys outside it; the ones the recipe can supply enter through the resolved hyperparameters.
TRAINER_NOT_IDENTITY = ("progress", "progress_every_s", "logging_steps", "num_workers", "save_total_limit",
                        "eval_batch_size", "use_cpu", "device", "grad_accum", "save_every_steps",
                        "save_every_minutes", "wait_for_lock", "gradient_checkpointing")
HPARAMS_NOT_IDENTITY = ("grad_accum",)
# Trainer keys added after runs existed: in the identity only when set away from this default, so
# earlier runs keep their directories.
TRAINER_IF_NOT_DEFAULT = {"clip": TrainerConf.clip}
TASK_KEYS_IF_SET = ("eval_every_steps", "switches")


def digest(data: Any, n: int = 8) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:n]


def identity(config: dict[str, Any], peft_name: str, capaboost: dict[str, Any],
             hparams: dict[str, Any], trainer_from_recipe: tuple[str, ...]) -> dict[str, Any]:
    """The experiment's defining values from the resolved config (``config`` is the whole container)."""
    from capaboost import __version__ as capaboost_version  # no torch: capaboost loads lazily

    out = {k: v for k, v in config.items() if k not in NOT_IDENTITY and k != "seed"}
    # task keys added later enter only when set, so earlier runs keep their identity (and run dir)
    out["task"] = {k: v for k, v in out["task"].items() if k not in TASK_KEYS_IF_SET or v}
    out["peft"] = peft_name
    out["capaboost"] = capaboost
    out["capaboost_version"] = capaboost_version  # a new method revision (e.g. new masks) is a new run
    out["hparams"] = {k: v for k, v in hparams.items() if k not in HPARAMS_NOT_IDENTITY}
    out["trainer"] = {k: v for k, v in config["trainer"].items()
                      if k not in trainer_from_recipe and k not in TRAINER_NOT_IDENTITY
                      and TRAINER_IF_NOT_DEFAULT.get(k, object()) != v}
    return out


def identity_key(ident: dict[str, Any]) -> str:
    return digest(ident)


def run_dir(runs_root: str | Path, ident: dict[str, Any], seed: int) -> Path:
    """runs_root/<task>/<model>/<peft>/<readable>-<hash of identity and seed>."""
    cb = ident["capaboost"]
    readable = f"d{cb['d']}_p{cb['density']:g}_{cb['mask']}_s{seed}_m{cb['mask_seed']}"
    return (Path(runs_root) / ident["task"]["name"] / ident["model"]["name"] / ident["peft"]
            / f"{readable}-{digest({**ident, 'seed': seed})}")


def group(ident: dict[str, Any]) -> str:
    """The W&B group and the tables' cell: the identity without the seed, readable then hashed."""
    cb = ident["capaboost"]
    return (f"{ident['task']['name']}/{ident['model']['name']}/{ident['peft']}/"
            f"d{cb['d']}_p{cb['density']:g}_{cb['mask']}_m{cb['mask_seed']}-{identity_key(ident)}")
