"""Run one experiment: compose -> validate -> build model + PEFT -> task trainer -> result.json.

    python run.py task=glue/cola peft=capaboost_lora d=2 density=0.5
    python run.py task=glue/cola peft=capaboost_lora model=tiny data=fixture     # offline, CPU, seconds
    python run.py -m sweep=<name> [hydra/launcher=slurm]

Bad configs exit with status 2 and one line naming the key, before torch is imported.
"""
from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from tasks.config.runspec import ConfigError, register, resolve
from tasks.config.task_options import options

CONF = Path(__file__).resolve().parent / "conf"
GROUPS = ("model", "peft", "task", "trainer", "logger", "data", "sweep")


def check_group_choices(argv: list[str]) -> None:
    """Unknown group options (task=glue/colaa) as one line, instead of Hydra's multi-line report."""
    for arg in argv:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+~")
        if not sep or key not in GROUPS or any(ch in value for ch in "*?$(){}[]"):
            continue
        found = options(key, CONF)  # files, and the task options made from the facts
        for option in filter(None, value.split(",")):
            if option != "null" and option not in found:
                raise ConfigError(f"{key}={option!r} is not an option of '{key}'; choose one of "
                                  f"{', '.join(found) if found else '(none)'}")


def precheck(argv: list[str]) -> None:
    """Compose and validate a single run once up front, so every config error is one line.

    Multirun and Hydra's own flags (--cfg, --help, ...) go straight to Hydra, which validates each job.
    """
    if any(arg.startswith("-") for arg in argv):
        return
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(str(CONF), version_base="1.3"):
            cfg = compose("config", overrides=argv, return_hydra_config=True)
    except Exception as error:  # Hydra/OmegaConf raise many types; all mean "this config is wrong"
        raise ConfigError(one_line(error)) from None
    if str(cfg.hydra.mode) != "RunMode.MULTIRUN":  # a sweep file may switch to multirun by itself
        resolve(cfg)


def one_line(error: BaseException) -> str:
    """Hydra's message and its cause's (which names the key and the expected type), on one line."""
    parts: list[str] = []
    while error is not None:
        for line in str(error).split("Config search path")[0].splitlines():
            line = line.strip()
            if line and not line.startswith("object_type") and line not in parts:
                parts.append(line)
        error = error.__cause__
    return " ".join(parts)


def fail(error: Exception) -> None:
    print(f"config error: {error}", file=sys.stderr)
    sys.exit(2)


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict | None:
    from hydra.core.hydra_config import HydraConfig

    try:
        spec = resolve(cfg, sweep=HydraConfig.get().runtime.choices.get("sweep"))
    except ConfigError as error:
        fail(error)
    from tasks.cluster.runlock import RunLocked, RunShared
    from tasks.cluster.status import DiskFull, Unwritable
    from tasks.data.check import DataError
    from tasks.runner import execute  # heavy imports (torch, transformers) only for a valid config

    try:
        return execute(spec)
    except ConfigError as error:  # found once torch is loaded, e.g. trainer.device=cuda without CUDA
        fail(error)
    except DataError as error:  # the data does not fit its task's schema; no run directory was made
        print(f"data error: {error}", file=sys.stderr)
        sys.exit(2)
    except RunLocked as error:
        # another live trainer has this run: a sweep (or any multirun: its other runs go on) is not
        # failed by it; a single run exits 75 (EX_TEMPFAIL, try again later)
        if isinstance(error, RunShared) or str(HydraConfig.get().mode) == "RunMode.MULTIRUN":
            print(f"skipped: {error}", flush=True)
            return None
        print(f"error: {error}", file=sys.stderr)
        sys.exit(75)
    except (DiskFull, Unwritable) as error:  # one line, not a traceback
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    register()
    try:
        check_group_choices(sys.argv[1:])
        precheck(sys.argv[1:])
    except ConfigError as error:
        fail(error)
    main()
