"""Every task family's Suite (tasks.facts.common), by name: what task configs, config checks, data
loading, preflight and reporting look a family up in."""
from __future__ import annotations

from tasks.facts import glue, math, squad, vtab
from tasks.facts.common import Selection, Suite

FAMILIES: dict[str, Suite] = {s.family: s for s in (glue.SUITE, squad.SUITE, vtab.SUITE, math.SUITE)}


def selection(family: str, dataset: str) -> Selection:
    """The best-epoch rule of one task."""
    return FAMILIES[family].selection[dataset]


def task_names(family: str) -> list[str]:
    """``<family>/<dataset>`` of every task of a family, in the paper's order: the task=... options."""
    return [f"{family}/{dataset}" for dataset in FAMILIES[family].tasks]
