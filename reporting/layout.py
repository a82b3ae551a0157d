"""Load the paper's table layouts (reporting/layouts.yaml) into typed columns."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

LAYOUTS = Path(__file__).with_name("layouts.yaml")


@dataclass(frozen=True)
class Column:
    task: str
    metric: str
    label: str
    group: str | None = None
    note: str = ""  # explained under the table (e.g. MNLI-m: matched only)

    @property
    def key(self) -> str:
        """The column name used in results/paper/*.csv."""
        return f"{self.task}:{self.metric}"


@dataclass(frozen=True)
class Layout:
    family: str
    columns: tuple[Column, ...]
    avg: str  # "columns" | "groups" | "none"
    extra: tuple[Column, ...] = ()  # in the .csv only, never averaged (e.g. MNLI mismatched)
    rank: bool = False  # the paper's rank-of-ΔW column
    sweeps: tuple[str, ...] = ()  # the sweeps whose runs make this family's main tables

    @property
    def groups(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for c in self.columns:
            if c.group:
                seen.setdefault(c.group)
        return tuple(seen)

    def task_label(self, task: str) -> str:
        """A task's name for a reader: CoLA, MRPC (not 'MRPC acc'), MNLI-m."""
        return next((c.label.split(" ")[0] for c in self.columns if c.task == task), task)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.task for c in self.columns))


def _columns(spec: dict, key: str) -> tuple[Column, ...]:
    rows = spec.get(key) or ()
    if isinstance(rows, dict):  # {from_facts: vtab, metric: accuracy}
        rows = _from_facts(**rows)
    return tuple(Column(c["task"], c["metric"], c["label"], c.get("group"), c.get("note", ""))
                 for c in rows)


def _from_facts(from_facts: str, metric: str) -> list[dict]:
    """One column per task of a suite, in its facts' order, with the facts' table label and group
    (VTAB-1k: tasks/facts/vtab.py, so its 19 names have one address)."""
    from tasks.facts import vtab

    if from_facts != "vtab":
        raise ValueError(f"layouts: columns from_facts={from_facts!r}: only vtab's facts give table labels")
    return [{"task": f"vtab/{name}", "metric": metric, "label": s.label, "group": s.group}
            for name, s in vtab.VTAB.items()]


@cache
def layouts(path: str = str(LAYOUTS)) -> dict[str, Layout]:
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    out = {}
    for family, spec in raw.items():
        if spec.get("avg", "none") not in ("columns", "groups", "none"):
            raise ValueError(f"{path}: {family}.avg must be columns|groups|none, got {spec.get('avg')!r}")
        out[family] = Layout(family, _columns(spec, "columns"), spec.get("avg", "none"),
                             _columns(spec, "extra"),
                             bool(spec.get("rank", False)), tuple(spec.get("sweeps") or ()))
    return out
