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

from tasks.config import ConfigError, register, resolve

CONF = Path(__file__).resolve().parent / "conf"
GROUPS = ("model", "peft", "task", "trainer", "logger", "data", "sweep")


def check_group_choices(argv: list[str]) -> None:
    """Unknown group options (task=glue/colaa) as one line, instead of Hydra's multi-line report."""
    for arg in argv:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+~")
        if not sep or key not in GROUPS or any(ch in value for ch in "*?$(){}[]"):
            continue
        for option in filter(None, value.split(",")):
            if option != "null" and not (CONF / key / f"{option}.yaml").is_file():
                found = sorted(str(p.relative_to(CONF / key))[:-5] for p in (CONF / key).rglob("*.yaml"))
                raise ConfigError(f"{key}={option!r} is not an option of '{key}'; choose one of "
                                  f"{', '.join(found) if found else '(none)'}")


def fail(error: Exception) -> None:
    print(f"config error: {error}", file=sys.stderr)
    sys.exit(2)


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict | None:
    try:
        spec = resolve(cfg)
    except ConfigError as error:
        fail(error)
    from tasks.common import execute  # heavy imports (torch, transformers) only for a valid config

    return execute(spec)


if __name__ == "__main__":
    register()
    try:
        check_group_choices(sys.argv[1:])
    except ConfigError as error:
        fail(error)
    main()
