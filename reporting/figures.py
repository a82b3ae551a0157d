"""Figures 1, 3 and 4 of the paper from grouped runs (PNG via matplotlib Agg, plus the plotted points as CSV).

A task's score is the mean of its table metrics (MRPC: acc and F1, ...), averaged per seed first so
the error bars are the spread over seeds. Figures are drawn from whatever runs exist; a figure with
no matching runs is skipped and said so.
"""
from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .groups import HUB, Cell, Stat, Table, metrics_of, summarize
from .layout import Layout
from .output import write_bytes, write_text

FIG3_TASKS = ("glue/cola", "glue/sst2")
FIG4_DENSITY = 0.5


@dataclass
class Point:
    figure: str
    series: str
    task: str
    x: float
    y: float
    yerr: float
    n: int
    extra: str = ""


def task_score(cell: Cell, metrics: list[str]) -> Stat | None:
    """Per seed: mean of the task's metrics; then mean ± std over seeds."""
    per_seed, seeds = [], []
    for seed, run in sorted(cell.runs.items()):
        m = metrics_of(run)
        vals = [m.get(k) for k in metrics]
        if vals and all(isinstance(v, (int, float)) for v in vals):
            per_seed.append(math.fsum(vals) / len(vals))
            seeds.append(seed)
    return summarize(per_seed, seeds) if per_seed else None


def _metrics_by_task(layout: Layout) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for c in layout.columns:
        out[c.task].append(c.metric)
    return out


def _params_pct(cells: dict[str, Cell]) -> float | None:
    from .tables import _params_pct as pct

    return pct([r for c in cells.values() for r in c.runs.values()])


def _measured_rank(cells: dict[str, Cell]) -> float | None:
    """The mean rank of delta W the runner measured (result["rank"] = capaboost.analysis.rank_summary)."""
    ranks = [r["rank"]["mean"] for c in cells.values() for r in c.runs.values()
             if isinstance(r.get("rank"), dict) and isinstance(r["rank"].get("mean"), (int, float))]
    return math.fsum(ranks) / len(ranks) if ranks else None


def _d(key: dict[str, Any]) -> int:
    return int(key["d"]) if key.get("d") is not None else 1


def fig1_points(table: Table, layout: Layout) -> list[Point]:
    """LoRA rows on GLUE: rank(ΔW) and GLUE score against the share of parameters.

    The score is averaged over the tasks every plotted configuration has, so a partial sweep
    never compares a 2-task mean with an 8-task one.
    """
    by_task = _metrics_by_task(layout)
    rows = []
    for key_t, cells in table.rows.items():
        key = dict(key_t)
        if str(key["peft"]).removeprefix("capaboost_") != "lora" or key.get("r") is None:
            continue
        if key.get("train_limit") or key.get("mask") not in (None, "random"):
            continue
        scores = {t: s.mean for t, cell in cells.items() if t in by_task
                  for s in [task_score(cell, by_task[t])] if s is not None}
        pct = _params_pct(cells)
        if pct is not None and scores:
            rows.append((key, cells, pct, scores))
    common = set.intersection(*(set(r[3]) for r in rows)) if rows else set()
    pts = []
    for key, cells, pct, scores in rows:
        series = "LoRA" if not str(key["peft"]).startswith("capaboost") else \
            f"CapaBoost-LoRA d={_d(key)} density={key['density']:g}"
        measured = _measured_rank(cells)
        rank = measured if measured is not None else float(_d(key) * int(key["r"]))
        extra = f"r={key['r']};rank={'measured' if measured is not None else 'd*r (Thm 3.1)'}"
        pts.append(Point("fig1", series, "rank", pct, rank, 0.0, 1, extra))
        if common:
            pts.append(Point("fig1", series, f"mean score over {len(common)} common GLUE task(s)", pct,
                             math.fsum(scores[t] for t in common) / len(common), 0.0, len(common),
                             extra + ";tasks=" + "+".join(sorted(common))))
    return pts


def fig3_points(table: Table, layout: Layout) -> list[Point]:
    """CoLA/SST-2 on a training subset: score vs density, one line per mask kind."""
    by_task = _metrics_by_task(layout)
    pts = []
    for key_t, cells in table.rows.items():
        key = dict(key_t)
        if not key.get("train_limit") or not str(key["peft"]).startswith("capaboost"):
            continue
        for task in FIG3_TASKS:
            s = task_score(cells[task], by_task[task]) if task in cells else None
            if s is not None:
                pts.append(Point("fig3", f"mask={key['mask']} d={_d(key)}", task, float(key["density"]),
                                 s.mean, s.std or 0.0, s.n, f"train_limit={key['train_limit']}"))
    # Fig. 3 contrasts mask kinds over density: one kind at one density (e.g. the demo's d arms) is none.
    kinds = {p.series.split(" d=")[0] for p in pts}
    return pts if len(kinds) > 1 or len({p.x for p in pts}) > 1 else []


def fig4_points(table: Table, layout: Layout) -> list[Point]:
    """Score vs LoRA rank r, one line per d at density 0.5 (d=1: vanilla LoRA)."""
    by_task = _metrics_by_task(layout)
    pts = []
    for key_t, cells in table.rows.items():
        key = dict(key_t)
        if str(key["peft"]).removeprefix("capaboost_") != "lora" or key.get("r") is None:
            continue
        capa = str(key["peft"]).startswith("capaboost")
        if key.get("train_limit"):
            continue
        if capa and (key.get("density") != FIG4_DENSITY or key.get("mask") != "random"):
            continue
        for task, cell in cells.items():
            s = task_score(cell, by_task[task]) if task in by_task else None
            if s is not None:
                pts.append(Point("fig4", f"d={_d(key)}" if capa else "LoRA (d=1)", task, float(key["r"]),
                                 s.mean, s.std or 0.0, s.n))
    return pts


def _plot(points: list[Point], title: str, xlabel: str, ylabel: str, logx: bool = False) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys(p.task for p in points))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False,
                             layout="constrained")  # one draw at save time (tight_layout draws twice)
    for ax, panel in zip(axes[0], panels, strict=True):
        series: dict[str, list[Point]] = defaultdict(list)
        for p in points:
            if p.task == panel:
                series[p.series].append(p)
        for name, ps in sorted(series.items()):
            ps.sort(key=lambda p: p.x)
            ax.errorbar([p.x for p in ps], [p.y for p in ps], yerr=[p.yerr for p in ps], marker="o",
                        capsize=3, label=name)
        if logx:
            ax.set_xscale("log", base=2)
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("rank(ΔW)" if panel == "rank" else ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _points_csv(points: list[Point]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["figure", "series", "panel", "x", "y", "yerr", "n", "extra"])
    for p in points:
        w.writerow([p.figure, p.series, p.task, f"{p.x:g}", f"{p.y:.4f}", f"{p.yerr:.4f}", p.n, p.extra])
    return buf.getvalue()


FIGURES = {
    "fig1_rank_params": (fig1_points, "params % (effective / backbone)", "GLUE score (x100)", False),
    "fig3_masks": (fig3_points, "density", "score (x100)", False),
    "fig4_r_by_d": (fig4_points, "LoRA rank r", "score (x100)", True),
}


def write_figures(tables: dict[tuple[str, str, str], Table], layouts: dict[str, Layout],
                  out_dir: Path) -> tuple[list[Path], list[str]]:
    """One PNG (+ CSV of its points) per figure and (model, data source) that has runs."""
    written, skipped = [], []
    for fig, (points_of, xlabel, ylabel, logx) in FIGURES.items():
        any_points = False
        for (family, model, source), table in sorted(tables.items()):
            if family != "glue":
                continue
            pts = points_of(table, layouts[family])
            if not pts:
                continue
            any_points = True
            name = f"{fig}_{table.name.removeprefix('glue_')}"
            data = "" if source == HUB else f" [{source} data: not comparable to the paper]"
            png = out_dir / f"{name}.png"
            write_bytes(png, _plot(pts, f"{fig}: {model}{data}", xlabel, ylabel, logx))
            write_text(out_dir / f"{name}.csv", _points_csv(pts))
            written.append(png)
        if not any_points:
            skipped.append(fig)
    return written, skipped
