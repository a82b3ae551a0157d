"""Turn grouped runs into the paper's table rows: our mean ± std per column, paper values beside.

Paper values appear only in hub-data tables whose model matches the paper's row; the average
column is shown only when every column of the row has a number (a partial average would not be
comparable with the paper's).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .groups import HUB, Stat, Table
from .layout import Layout
from .paper import PaperRow

PEFT_LABEL = {"lora": "LoRA", "padapter": "PAdapter", "prefix": "Prefix"}
METHOD_ORDER = {"lora": 0, "padapter": 1, "prefix": 2}
# Shown in every CapaBoost row label; other fields only when they vary within the table.
ALWAYS = ("d", "density")
NEVER = ("peft", "source")


@dataclass
class RowView:
    label: str
    kind: str  # "ours" | "paper"
    key: dict[str, Any]
    stats: list[Stat | None]
    paper: list[float | None]
    avg: float | None = None
    avg_paper: float | None = None
    groups: dict[str, float | None] = field(default_factory=dict)
    params_pct: float | None = None
    params_paper: float | None = None
    reference: str = ""


@dataclass
class TableView:
    name: str
    title: str
    layout: Layout
    source: str
    rows: list[RowView]
    notes: list[str]


def base_label(peft: str) -> str:
    method = peft.removeprefix("capaboost_")
    name = PEFT_LABEL.get(method, method)
    return f"CapaBoost-{name}" if peft.startswith("capaboost") else name


def _fmt_value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def row_labels(keys: list[dict[str, Any]]) -> list[str]:
    """Base PEFT name, plus d/density for CapaBoost, plus every setting that differs across rows."""
    fields = [f for f in (keys[0] if keys else {}) if f not in NEVER and f != "extra"]
    varying = {f for f in fields if len({repr(k[f]) for k in keys if k.get(f) is not None}) > 1}
    extras = [dict(k.get("extra", ())) for k in keys]
    extra_varying = sorted({name for e in extras for name in e
                            if len({repr(x.get(name)) for x in extras}) > 1})
    out = []
    for k, e in zip(keys, extras, strict=True):
        capa = str(k["peft"]).startswith("capaboost")
        parts = [f"{f}={_fmt_value(k[f])}" for f in fields
                 if k.get(f) is not None and (f in varying or (f in ALWAYS and capa))]
        parts += [f"{name}={_fmt_value(e[name])}" for name in extra_varying if name in e]
        out.append(base_label(str(k["peft"])) + (f" ({', '.join(parts)})" if parts else ""))
    return out


def _sort_key(key: dict[str, Any]) -> tuple:
    method = str(key["peft"]).removeprefix("capaboost_")
    return (METHOD_ORDER.get(method, 9), method, str(key["peft"]).startswith("capaboost"),
            tuple(repr(v) for v in key.values()))


def _params_pct(runs: list[dict[str, Any]]) -> float | None:
    """Effective parameters / frozen backbone parameters (total - trainable), %, mean over runs."""
    pcts = []
    for run in runs:
        p = run.get("params") or {}
        eff, tot, tr = p.get("effective"), p.get("total"), p.get("trainable") or 0
        if isinstance(eff, (int, float)) and isinstance(tot, (int, float)) and tot > 0:
            backbone = tot - tr if tot - tr > 0 else tot
            pcts.append(100.0 * eff / backbone)
    return math.fsum(pcts) / len(pcts) if pcts else None


def _averages(layout: Layout, means: list[float | None]) -> tuple[float | None, dict[str, float | None]]:
    def mean_of(xs: list[float | None]) -> float | None:
        return math.fsum(xs) / len(xs) if xs and all(x is not None for x in xs) else None  # type: ignore[arg-type]

    if layout.avg == "none":
        return None, {}
    groups = {g: mean_of([m for c, m in zip(layout.columns, means, strict=True) if c.group == g])
              for g in layout.groups}
    return mean_of(means), groups


def build_view(table: Table, layout: Layout, paper_rows: list[PaperRow]) -> TableView:
    """Our rows (sorted in the paper's method order) and the paper's reference rows."""
    use_paper = table.source == HUB
    paper_rows = [p for p in paper_rows if p.model == table.model] if use_paper else []
    keys = sorted((dict(k) for k in table.rows), key=_sort_key)
    labels = row_labels(keys)
    # A paper row sits beside ours only when exactly one of our rows matches it (e.g. not beside
    # each of LoRA r=4/8/16 from a rank sweep); otherwise it is shown as a row of its own.
    hits = {id(p): [i for i, k in enumerate(keys) if p.matches(k)] for p in paper_rows}
    beside = {hits[id(p)][0]: p for p in paper_rows if len(hits[id(p)]) == 1}
    matched = {id(p) for p in beside.values()}
    rows: list[RowView] = []
    for i, (key, label) in enumerate(zip(keys, labels, strict=True)):
        cells = table.rows[tuple(key.items())]
        stats = [cells[c.task].metric(c.metric) if c.task in cells else None for c in layout.columns]
        paper = beside.get(i)
        avg, groups = _averages(layout, [s.mean if s else None for s in stats])
        runs = [r for cell in cells.values() for r in cell.runs.values()]
        rows.append(RowView(label, "ours", key, stats,
                            [paper.values.get(c.key) if paper else None for c in layout.columns],
                            avg, paper.values.get("avg") if paper else None, groups, _params_pct(runs),
                            paper.values.get("params_pct") if paper else None,
                            paper.reference if paper else ""))
    refs = [RowView(f"{p.method} (paper)", "paper", {"peft": p.peft}, [None] * len(layout.columns),
                    [p.values.get(c.key) for c in layout.columns], None, p.values.get("avg"),
                    {g: p.values.get(g) for g in layout.groups}, None, p.values.get("params_pct"),
                    p.reference)
            for p in paper_rows if p.has_values and id(p) not in matched]
    return TableView(table.name, _title(table), layout, table.source, refs + rows, _notes(table, layout))


def _title(table: Table) -> str:
    data = "hub data" if table.source == HUB else f"{table.source} data -- NOT comparable to the paper"
    return f"{table.family.upper()} on {table.model} ({data})"


def _notes(table: Table, layout: Layout) -> list[str]:
    notes = ["Cells: mean ± sample std (ddof=1) over training seeds, x100, best epoch (report split); "
             "(n=k): fewer than 3 seeds; —: no run.",
             "Params %: effective trainable parameters / frozen backbone parameters (total - trainable)."]
    if layout.avg == "columns":
        notes.append(f"Avg: mean of the {len(layout.columns)} columns (the paper's convention), "
                     "shown only when every column has a value.")
    elif layout.avg == "groups":
        notes.append("Group columns: mean of the group's datasets; Avg: mean of all datasets; "
                     "shown only when complete.")
    if table.source == HUB:
        notes.append("(paper x): the published value (results/paper/), only for the matching model "
                     "and configuration.")
    else:
        notes.append(f"These runs used {table.source} data, not the official datasets: "
                     "never compare them with published numbers.")
    dups = sorted(p for cells in table.rows.values() for c in cells.values() for p in c.duplicates)
    if dups:
        notes.append(f"Ignored {len(dups)} duplicate result(s) of a seed already counted: {', '.join(dups)}")
    return notes
