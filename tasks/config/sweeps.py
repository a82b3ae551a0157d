"""Expand a sweep file (sweeps/<name>.yaml) into its runs, exactly as Hydra's BasicSweeper does.

`python run.py -m sweep=<name> extra...` makes the sweeper parse `hydra.sweeper.params` followed
by the command-line arguments (so a key given on the command line replaces the file's list) and
launch the Cartesian product. We reuse Hydra's own override parser (public) and take the product as
its BasicSweeper does, so the listing is the launch, without composing a config or touching a GPU.
"""
from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from tasks import CONF, ROOT

SWEEPS = ROOT / "sweeps"
# Names that stand for several sweeps (make preflight / sweep-list / prefetch NAME=paper): every paper
# table and figure. Sweeps share runs (a Fig. 1 cell is also a main-table cell): counted once.
SWEEP_SETS = {"paper": ("glue_roberta_base", "glue_deberta_v3", "squad", "vtab", "fig1_rank_params",
                        "fig3_masks", "fig4_r_by_d")}


def available(sweeps_dir: Path = SWEEPS) -> list[str]:
    return sorted(p.stem for p in sweeps_dir.glob("*.yaml"))


def sweep_names(name: str, sweeps_dir: Path = SWEEPS) -> list[str]:
    """The sweeps ``name`` stands for: a set of ``SWEEP_SETS``, ``all`` (every file), or itself."""
    return available(sweeps_dir) if name == "all" else list(SWEEP_SETS.get(name, (name,)))


def scoped(name: str, overrides: list[str]) -> list[str]:
    """The overrides for sweep ``name`` out of a list for several: plain ones apply to every sweep,
    ``<sweep>:<override>`` ones only to that sweep (``vtab:data.path=/data/vtab-1k``)."""
    out = []
    for override in overrides:
        key = override.split("=", 1)[0]
        sweep, sep, rest = override.partition(":")
        if sep and ":" in key:
            if sweep == name:
                out.append(rest)
        else:
            out.append(override)
    return out


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
    return {str(k): _resolved(str(v)) for k, v in params.items()}


def _resolved(value: str) -> str:
    """A value as Hydra's sweeper gets it: interpolations resolved (``${tasks:vtab}`` -> every VTAB task,
    tasks.config.task_options)."""
    if "${" not in value:
        return value
    from omegaconf import OmegaConf

    from tasks.config.schema import register_resolvers

    register_resolvers()
    return str(OmegaConf.create({"value": value}).value)


def expand(name: str, extra: list[str] | None = None, sweeps_dir: Path = SWEEPS) -> list[list[str]]:
    """Override lists of every run `python run.py -m sweep=<name> *extra` launches, in launch order."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = params_of(name, sweeps_dir)
    args = [f"{k}={v}" for k, v in params.items()] + [f"sweep={name}"] + list(extra or [])
    overrides = OverridesParser.create().parse_overrides(args)
    # Hydra keeps hydra.*/hydra/... overrides (launcher, sweep dir) for the whole sweep, not per run.
    return _product([o for o in overrides if not o.is_hydra_override()])


def _product(overrides: list[Any]) -> list[list[str]]:
    """Hydra's BasicSweeper's runs (hydra/_internal/core_plugins/basic_sweeper.py, split_arguments): one
    list of choices per key, a later override of a key replacing an earlier one in its first place,
    then the Cartesian product in key order; written with Hydra's public Override methods."""
    choices: dict[str, list[str]] = {}
    for o in overrides:
        key = o.get_key_element()
        if not o.is_sweep_override():
            choices[key] = [f"{key}={o.get_value_element_as_str()}"]
        elif o.is_discrete_sweep():
            choices[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
        else:
            raise ValueError(f"{o.input_line}: the basic sweeper takes only lists (a,b,c or choice(...)), "
                             f"not {o.value_type.name} sweeps")
    return [list(run) for run in itertools.product(*choices.values())]


def varying(batch: Sequence[Sequence[str]]) -> list[str]:
    """Short names for a sweep's runs: only the overrides that differ between them."""
    common = set.intersection(*(set(o) for o in batch)) if batch else set()
    return [" ".join(o for o in overrides if o not in common) or "(single run)" for overrides in batch]


def is_group(key: str, conf: Path = CONF) -> bool:
    """A config-group override (model=..., hydra/launcher=...) picks files; others set values."""
    from tasks.config.task_options import stored_group

    key = key.lstrip("+~")
    return (conf / key).is_dir() or key.startswith("hydra/") or stored_group(key)


def compose_runs(name: str, extra: list[str] | None = None,
                 errors: list[tuple[list[str], str]] | None = None) -> list[tuple[list[str], Any]]:
    """Compose and validate every run of a sweep (no training): [(overrides, RunSpec)].

    Hydra's compose runs once per distinct set of config-group choices (it reads every YAML file
    each time, ~0.2 s); each run's value overrides are then applied with Hydra's own override
    code, as compose itself does after merging the defaults, and the runner's `resolve` checks
    the result. Raises ValueError naming the first run that does not compose or validate; with an
    ``errors`` list, such runs are appended there as (overrides, one line) and the rest still composed.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from tasks.config.runspec import register, resolve

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
                _apply_values(parser.parse_overrides(values), cfg)
                spec = resolve(cfg)
            except Exception as e:  # noqa: BLE001 -- re-raised with the run that failed
                if errors is None:
                    raise ValueError(f"sweep {name}: run {' '.join(overrides)} does not compose: {e}") from e
                errors.append((overrides, " ".join(str(e).split())))
                continue
            out.append((overrides, spec))
    return out


def _apply_values(overrides: list[Any], cfg: Any) -> None:
    """Value overrides (``a.b=1``, ``+x=2``, ``~y``) applied to a composed config, by the code Hydra's
    compose runs after merging the defaults. Hydra has no public API for this step: the alternative,
    one full ``compose`` per run, reads every YAML file each time (~0.2 s; minutes for NAME=paper). This
    is the project's one use of ``hydra._internal`` (hydra 1.3.x, requirements.txt pins it)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    ConfigLoaderImpl._apply_overrides_to_config(overrides, cfg)


def distinct_runs(names: list[str], overrides: list[str] | None = None) -> dict[str, Any]:
    """Every run of the sweeps ``names`` (overrides scoped as in ``scoped``), by run directory: two
    sweeps that list one experiment and seed share it. {"listed": {sweep: count}, "runs": {run_dir:
    (sweeps, overrides, RunSpec)}, "failed": {sweep: [(overrides, one line)]}} (runs that do not compose)."""
    listed: dict[str, int] = {}
    runs: dict[str, tuple[list[str], list[str], Any]] = {}
    failed: dict[str, list[tuple[list[str], str]]] = {}
    for name in names:
        errors: list[tuple[list[str], str]] = []
        composed = compose_runs(name, scoped(name, list(overrides or [])), errors)
        listed[name] = len(composed) + len(errors)
        for run_overrides, spec in composed:
            runs.setdefault(str(spec.run_dir), ([], run_overrides, spec))[0].append(name)
        if errors:
            failed[name] = errors
    return {"listed": listed, "runs": runs, "failed": failed}
