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

    @property
    def key(self) -> str:
        """The column name used in results/paper/*.csv."""
        return f"{self.task}:{self.metric}"


@dataclass(frozen=True)
class Layout:
    family: str
    columns: tuple[Column, ...]
    avg: str  # "columns" | "groups" | "none"

    @property
    def groups(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for c in self.columns:
            if c.group:
                seen.setdefault(c.group)
        return tuple(seen)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.task for c in self.columns))


@cache
def layouts(path: str = str(LAYOUTS)) -> dict[str, Layout]:
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    out = {}
    for family, spec in raw.items():
        if spec.get("avg", "none") not in ("columns", "groups", "none"):
            raise ValueError(f"{path}: {family}.avg must be columns|groups|none, got {spec.get('avg')!r}")
        cols = tuple(Column(c["task"], c["metric"], c["label"], c.get("group")) for c in spec["columns"])
        out[family] = Layout(family, cols, spec.get("avg", "none"))
    return out
