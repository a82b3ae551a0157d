"""The ``task=<family>/<dataset>`` options, made from the task facts (tasks/facts/) and stored in Hydra's
ConfigStore: a task's name, family, dataset, default protocol and main metric are read from its suite,
never restated in a file. What every task of a family shares beyond its facts (an evaluation schedule, a
benchmark's trainer values) is conf/family/<family>.yaml, pulled in by each of its tasks.

``python run.py task=vtab/cifar``, ``--cfg job`` and ``--info`` see these options as they see files;
a sweep lists a family's tasks as ``task: ${tasks:vtab}`` (the same names, in the paper's order).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks import CONF
from tasks.facts.families import FAMILIES, task_names


def node(family: str, dataset: str) -> dict[str, Any]:
    """One task's config (package ``task``), with its family's shared file first when there is one."""
    suite = FAMILIES[family]
    shared = CONF / "family" / f"{family}.yaml"
    return {**({"defaults": [f"/family/{family}@_global_", "_self_"]} if shared.is_file() else {}),
            "name": f"{family}/{dataset}", "family": family, "dataset": dataset,
            "protocol": suite.protocol, "main_metric": suite.main_metric[dataset]}


def register_tasks() -> None:
    """Store every task's config as ``task/<family>/<dataset>`` (before Hydra composes)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for family, suite in FAMILIES.items():
        for dataset in suite.tasks:
            store.store(group=f"task/{family}", name=dataset, node=node(family, dataset))


def tasks_resolver(family: str) -> str:
    """``${tasks:vtab}``: every task of a family as a sweep's comma-separated list."""
    if family not in FAMILIES:
        raise ValueError(f"${{tasks:{family}}}: no task family {family!r}; families: {', '.join(FAMILIES)}")
    return ",".join(task_names(family))


def stored_group(group: str) -> bool:
    """Whether ``group`` (``task``, ``task/vtab``) holds stored configs (after ``register_tasks``)."""
    from hydra.core.config_store import ConfigStore

    try:
        ConfigStore.instance().list(group)
    except OSError:
        return False
    return True


def options(group: str, conf: Path = CONF) -> list[str]:
    """Every option of a config group, files under conf/<group>/ and stored configs alike
    (``task`` -> glue/cola, ..., vtab/svhn), sorted."""
    from hydra.core.config_store import ConfigStore

    found = {str(p.relative_to(conf / group))[:-5] for p in (conf / group).rglob("*.yaml")}
    store, pending = ConfigStore.instance(), [group]
    while pending:
        path = pending.pop()
        try:
            entries = store.list(path)
        except OSError:  # not a stored group
            continue
        for entry in entries:
            if entry.endswith(".yaml"):
                found.add(f"{path}/{entry[:-5]}"[len(group) + 1:])
            else:
                pending.append(f"{path}/{entry}")
    return sorted(found)
