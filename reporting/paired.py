"""Paired by seed: each CapaBoost row of a table against the vanilla row of its PEFT method nearest in
PEFT parameters, and against every PEFT-library baseline row (DoRA, VeRA, ...: tasks/baselines.py) whose
PEFT parameters are within PARAM_TOLERANCE of its own, column by column, on the seeds both rows have.

One seed fixes the data order and the head's init for both rows, so much of the seed-to-seed spread
cancels in the difference. The verdict reads the 95% Student-t interval of the mean difference
(better / worse / within noise), never one row's seed std. Written beside each table that has such a
pair, as ``<table>-paired.md``.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from tasks.baselines import is_baseline

from .groups import Row, metrics_of, run_flags
from .layout import Column
from .render import marks
from .tables import RowView, TableView, mark_notes

LEVEL = 0.95
# A baseline row is compared with a CapaBoost row when its PEFT params are within this fraction of the
# CapaBoost row's. 0.2, not 0.1: DoRA's size moves in steps of one LoRA rank plus its magnitude vector, so
# its nearest size can sit ~17% away (MiniLM: r=2 23,040, r=3 32,256 against 27,655).
PARAM_TOLERANCE = 0.2


@dataclass(frozen=True)
class Pair:
    capaboost: RowView
    vanilla: RowView
    column: Column
    diffs: tuple[float, ...]  # x100, one per shared seed
    capaboost_params: float
    vanilla_params: float
    flags: frozenset[str] = frozenset()  # run_flags of the runs used: the table's marks (†, ‡)

    @property
    def interval(self) -> tuple[float, float, float]:
        """(mean, low, high) of the mean difference; low/high are nan below two seeds."""
        return t_interval(self.diffs)

    @property
    def verdict(self) -> str:
        mean, lo, hi = self.interval
        if math.isnan(lo):
            return "fewer than 2 seeds: no interval"
        return "CapaBoost better" if lo > 0 else "CapaBoost worse" if hi < 0 else "within noise"


def t_interval(diffs: tuple[float, ...] | list[float], level: float = LEVEL) -> tuple[float, float, float]:
    from scipy import stats

    n = len(diffs)
    if n < 2:
        return (diffs[0] if diffs else math.nan), math.nan, math.nan
    mean = statistics.fmean(diffs)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * statistics.stdev(diffs) / math.sqrt(n)
    return mean, mean - half, mean + half


def peft_params(row: Row) -> float | None:
    """Mean ``params.peft`` (PEFT weights some mask keeps, head excluded) over the row's runs."""
    counts = [c for r in row.all_runs() if isinstance(c := (r.get("params") or {}).get("peft"), (int, float))]
    return statistics.fmean(counts) if counts else None


def pairs(view: TableView) -> list[Pair]:
    size = {id(v): peft_params(v.row) for v in view.rows if v.kind == "ours" and v.row is not None}
    ours = [v for v in view.rows if size.get(id(v)) is not None]
    out = []
    for capa in (v for v in ours if v.key.get("capaboost")):
        vanilla = [v for v in ours if not v.key.get("capaboost") and v.key["method"] == capa.key["method"]]
        matches = [min(vanilla, key=lambda v: abs(size[id(v)] - size[id(capa)]))] if vanilla else []
        matches += [v for v in ours if is_baseline(str(v.key["method"]))
                    and abs(size[id(v)] - size[id(capa)]) <= PARAM_TOLERANCE * size[id(capa)]]
        out += _column_pairs(view, capa, matches, size)
    return out


def _column_pairs(view: TableView, capa: RowView, matches: list[RowView],
                  size: dict[int, float]) -> list[Pair]:
    out = []
    for match in matches:
        for column in view.layout.columns:
            a, b = (v.row.cells.get(column.task) for v in (capa, match))
            if a is None or b is None:
                continue
            metric = column.metric
            runs = [(a.runs[s], b.runs[s]) for s in sorted(set(a.runs) & set(b.runs))
                    if metric in metrics_of(a.runs[s]) and metric in metrics_of(b.runs[s])]
            diffs = tuple(100 * (metrics_of(x)[metric] - metrics_of(y)[metric]) for x, y in runs)
            if diffs:
                flags = frozenset().union(*(run_flags(r) for pair in runs for r in pair))
                out.append(Pair(capa, match, column, diffs, size[id(capa)], size[id(match)], flags))
    return out


def to_markdown(view: TableView, found: list[Pair]) -> str:
    baselines = any(is_baseline(str(p.vanilla.key["method"])) for p in found)
    against = (f", and every PEFT-library baseline row within ±{PARAM_TOLERANCE:.0%} of its PEFT parameters"
               if baselines else "")
    lines = [f"# {view.title}: paired by seed", "",
             f"CapaBoost row − the vanilla row of its method nearest in PEFT parameters{against} (x100), on "
             f"the seeds both have; {LEVEL:.0%} Student-t interval of the mean difference; the verdict reads "
             "the interval.", "",
             "| CapaBoost | PEFT params | vs | PEFT params | column | difference | 95% CI | n | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    for p in found:
        mean, lo, hi = p.interval
        ci = "—" if math.isnan(lo) else f"[{lo:+.2f}, {hi:+.2f}]"
        lines.append(f"| {p.capaboost.label} | {p.capaboost_params:,.0f} | {p.vanilla.label} | "
                     f"{p.vanilla_params:,.0f} | {p.column.label} | {mean:+.2f} | {ci} | {len(p.diffs)} | "
                     f"{p.verdict}{marks(p.flags)} |")
    used = set().union(*(p.flags for p in found))
    runs = [r for p in found for v in (p.capaboost, p.vanilla) if v.row for r in v.row.all_runs()]
    lines += [""] + [f"- {note}" for note in mark_notes(used, runs)]
    return "\n".join(lines).rstrip() + "\n"
