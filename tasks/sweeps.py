"""Expand a sweep file (sweeps/<name>.yaml) into its runs, exactly as Hydra's BasicSweeper does.

`python run.py -m sweep=<name> extra...` makes the sweeper parse `hydra.sweeper.params` followed
by the command-line arguments (so a key given on the command line replaces the file's list) and
launch the Cartesian product. We reuse Hydra's own parser and product, so the listing is the
launch, without composing a config or touching a GPU.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "sweeps"
CONF = ROOT / "conf"


def available(sweeps_dir: Path = SWEEPS) -> list[str]:
    return sorted(p.stem for p in sweeps_dir.glob("*.yaml"))


def params_of(name: str, sweeps_dir: Path = SWEEPS) -> dict[str, str]:
    """The sweep's hydra.sweeper.params, as the override strings Hydra will see.

    A sweep may start from another (``defaults: [demo, _self_]``): Hydra merges the two files, so the
    grid is the other sweep's with this file's keys replacing or adding to it, in that order.
    """
    path = sweeps_dir / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no sweep {name!r} ({path} missing); "
                                f"sweeps: {', '.join(available(sweeps_dir))}")
    with open(path, encoding="utf-8") as f:
        raw: Any = yaml.safe_load(f) or {}
    params: dict[str, Any] = {}
    for parent in raw.get("defaults") or []:  # sibling sweeps; group overrides (dicts) pick no grid
        if isinstance(parent, str) and parent != "_self_":
            params.update(params_of(parent, sweeps_dir))
    params.update((((raw.get("hydra") or {}).get("sweeper") or {}).get("params")) or {})
    if not params:
        raise ValueError(f"{path}: no hydra.sweeper.params grid")
    for key, value in params.items():
        if isinstance(value, (bool, list, dict)) or value is None:
            raise ValueError(f"{path}: hydra.sweeper.params.{key} must be a comma-separated string, "
                             f"got {value!r}")
    return {str(k): str(v) for k, v in params.items()}


def expand(name: str, extra: list[str] | None = None, sweeps_dir: Path = SWEEPS) -> list[list[str]]:
    """Override lists of every run `python run.py -m sweep=<name> *extra` launches, in launch order."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = params_of(name, sweeps_dir)
    args = [f"{k}={v}" for k, v in params.items()] + [f"sweep={name}"] + list(extra or [])
    overrides = OverridesParser.create().parse_overrides(args)
    # Hydra keeps hydra.*/hydra/... overrides (launcher, sweep dir) for the whole sweep, not per run.
    overrides = [o for o in overrides if not o.is_hydra_override()]
    (batch,) = BasicSweeper.split_arguments(overrides, None)
    return batch


def varying(batch: Sequence[Sequence[str]]) -> list[str]:
    """Short names for a sweep's runs: only the overrides that differ between them."""
    common = set.intersection(*(set(o) for o in batch)) if batch else set()
    return [" ".join(o for o in overrides if o not in common) or "(single run)" for overrides in batch]


def is_group(key: str, conf: Path = CONF) -> bool:
    """A config-group override (model=..., hydra/launcher=...) picks files; others set values."""
    key = key.lstrip("+~")
    return (conf / key).is_dir() or key.startswith("hydra/")


def compose_runs(name: str, extra: list[str] | None = None) -> list[tuple[list[str], Any]]:
    """Compose and validate every run of a sweep (no training): [(overrides, RunSpec)].

    Hydra's compose runs once per distinct set of config-group choices (it reads every YAML file
    each time, ~0.2 s); each run's value overrides are then applied with Hydra's own override
    code, as compose itself does after merging the defaults, and the runner's `resolve` checks
    the result. Raises ValueError naming the first run that does not compose or validate.
    """
    from hydra import compose, initialize_config_dir
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from tasks.config import register, resolve

    register()
    parser = OverridesParser.create()
    base: dict[tuple[str, ...], Any] = {}
    out = []
    with initialize_config_dir(str(CONF), version_base="1.3"):
        for overrides in expand(name, extra):
            groups = tuple(o for o in overrides if is_group(o.split("=", 1)[0]))
            values = [o for o in overrides if o not in groups]
            try:
                if groups not in base:
                    base[groups] = compose("config", overrides=list(groups))
                cfg = copy.deepcopy(base[groups])  # keeps struct mode: a misspelt key still fails
                ConfigLoaderImpl._apply_overrides_to_config(parser.parse_overrides(values), cfg)
                spec = resolve(cfg)
            except Exception as e:  # noqa: BLE001 -- re-raised with the run that failed
                raise ValueError(f"sweep {name}: run {' '.join(overrides)} does not compose: {e}") from e
            out.append((overrides, spec))
    return out
