"""Paired by seed: each CapaBoost row of a table against the vanilla row of its PEFT method nearest in
PEFT parameters and every PEFT-library baseline row (DoRA, VeRA, ...: tasks/training/baselines.py) whose PEFT
parameters are within PARAM_TOLERANCE of its own, column by column, on the seeds both rows have; and
each row that sets one of our switches to the authors' side (``OURS``: docs/paper.md, "Faithful by
default") against the row that is the same experiment with every switch on our side.

One seed fixes the data order and the head's init for both rows, so much of the seed-to-seed spread
cancels in the difference. The verdict reads the 95% Student-t interval of the mean difference
(better / worse / within noise), never one row's seed std. Written beside each table that has such a
pair, as ``<table>-paired.md``.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from tasks.config.schema import PeftConf, TaskConf, TrainerConf
from tasks.training.baselines import is_baseline

from .groups import Row, metrics_of, run_flags
from .layout import Column
from .render import marks
from .tables import RowView, TableView, mark_notes

LEVEL = 0.95
# Our side of each switch that differs from the authors' code, by its key in a row's identity: the
# schema's defaults (a key absent from the identity is at its default).
OURS = {"capaboost.init": PeftConf.init, "trainer.clip": TrainerConf.clip, "task.report": TaskConf.report}
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
    subject: str = "CapaBoost"  # what the verdict names: "CapaBoost", or "authors' side" (switch pairs)

    @property
    def interval(self) -> tuple[float, float, float]:
        """(mean, low, high) of the mean difference; low/high are nan below two seeds."""
        return t_interval(self.diffs)

    @property
    def verdict(self) -> str:
        mean, lo, hi = self.interval
        if math.isnan(lo):
            return "fewer than 2 seeds: no interval"
        return f"{self.subject} better" if lo > 0 else f"{self.subject} worse" if hi < 0 else "within noise"


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
    """CapaBoost vs its matched vanilla row, then the authors' side of a switch vs ours."""
    size = {id(v): peft_params(v.row) for v in view.rows if v.kind == "ours" and v.row is not None}
    ours = [v for v in view.rows if size.get(id(v)) is not None]
    matched = []
    for capa in (v for v in ours if v.key.get("capaboost")):
        vanilla = [v for v in ours if not v.key.get("capaboost") and v.key["method"] == capa.key["method"]]
        if vanilla:
            matched.append((capa, min(vanilla, key=lambda v: abs(size[id(v)] - size[id(capa)])), "CapaBoost"))
        matched += [(capa, v, "CapaBoost") for v in ours if is_baseline(str(v.key["method"]))
                    and abs(size[id(v)] - size[id(capa)]) <= PARAM_TOLERANCE * size[id(capa)]]
    reference = {_without_switches(v): v for v in ours if _all_ours(v)}
    for row in (v for v in ours if not _all_ours(v)):
        if (base := reference.get(_without_switches(row))) is not None:
            matched.append((row, base, "authors' side"))
    out = []
    for row, match, subject in matched:
        for column in view.layout.columns:
            a, b = (v.row.cells.get(column.task) for v in (row, match))
            if a is None or b is None:
                continue
            metric = column.metric
            runs = [(a.runs[s], b.runs[s]) for s in sorted(set(a.runs) & set(b.runs))
                    if metric in metrics_of(a.runs[s]) and metric in metrics_of(b.runs[s])]
            diffs = tuple(100 * (metrics_of(x)[metric] - metrics_of(y)[metric]) for x, y in runs)
            if diffs:
                flags = frozenset().union(*(run_flags(r) for pair in runs for r in pair))
                out.append(Pair(row, match, column, diffs, size[id(row)], size[id(match)], flags, subject))
    return out


def _all_ours(view: RowView) -> bool:
    return all(view.identity.get(key, value) == value for key, value in OURS.items())


def _without_switches(view: RowView) -> str:
    return repr(sorted((k, repr(v)) for k, v in view.identity.items() if k not in OURS))


def to_markdown(view: TableView, found: list[Pair]) -> str:
    lines = [f"# {view.title}: paired by seed", ""]
    capa = [p for p in found if p.subject == "CapaBoost"]
    switch = [p for p in found if p.subject != "CapaBoost"]
    baselines = any(is_baseline(str(p.vanilla.key["method"])) for p in capa)
    against = (f", and every PEFT-library baseline row within ±{PARAM_TOLERANCE:.0%} of its PEFT parameters"
               if baselines else "")
    if capa:
        lines += _section(capa, "CapaBoost row − the vanilla row of its method nearest in PEFT parameters"
                                f"{against} (x100)", "CapaBoost")
    if switch:
        lines += _section(switch, "A row with a switch on the authors' side − the same experiment with every "
                                  "switch on ours (x100)", "authors' side")
    used = set().union(*(p.flags for p in found))
    runs = [r for p in found for v in (p.capaboost, p.vanilla) if v.row for r in v.row.all_runs()]
    lines += [f"- {note}" for note in mark_notes(used, runs)]
    return "\n".join(lines).rstrip() + "\n"


def _section(found: list[Pair], what: str, head: str) -> list[str]:
    lines = [f"{what}, on the seeds both have; {LEVEL:.0%} Student-t interval of the mean difference; the "
             "verdict reads the interval.", "",
             f"| {head} | PEFT params | vs | PEFT params | column | difference | 95% CI | n | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    for p in found:
        mean, lo, hi = p.interval
        ci = "—" if math.isnan(lo) else f"[{lo:+.2f}, {hi:+.2f}]"
        lines.append(f"| {p.capaboost.label} | {p.capaboost_params:,.0f} | {p.vanilla.label} | "
                     f"{p.vanilla_params:,.0f} | {p.column.label} | {mean:+.2f} | {ci} | {len(p.diffs)} | "
                     f"{p.verdict}{marks(p.flags)} |")
    return lines + [""]
