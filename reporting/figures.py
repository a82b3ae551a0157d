"""Figures 1, 3 and 4 of the paper from table views (PNG via matplotlib Agg, plus the plotted points as CSV).

Each figure is drawn from its own sweep's runs (sweeps/fig*.yaml; files without a sweep record
fall back to the main tables, as before) and from the same TableView as the tables, so Fig. 1's
GLUE average is the table's Avg by construction. A task's score in Fig. 3/4 is the mean of its
table metrics (MRPC: acc and F1, ...), averaged per seed first so the error bars are the spread
over seeds. A figure whose grid is absent (one rank, one arm) is skipped and the reason given.
"""
from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .groups import HUB, MAIN, Cell, Stat, metrics_of, summarize
from .layout import Layout
from .output import write_bytes, write_text
from .tables import MODEL_LABEL, RowView, TableView, base_label

FIG3_TASKS = ("glue/cola", "glue/sst2")
FIG4_DENSITY = 0.5
FIG3_ARMS = {"random": "different masks", "same": "same mask", "none": "dropout only"}
RANK_PANEL, GLUE_PANEL = "Rank of ΔW", "GLUE average"


@dataclass
class Point:
    figure: str
    series: str
    panel: str
    x: float
    y: float
    yerr: float
    n: int
    extra: str = ""


@dataclass
class Figure:
    """What a figure says: its points per panel and series, its axes, and what it leaves out."""

    kind: str  # fig1_rank_params | fig3_masks | fig4_r_by_d (= the sweep that makes it)
    stem: str  # file name without extension
    title: str
    xlabel: str
    ylabels: dict[str, str]  # panel -> y-axis label
    points: list[Point] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    logx: bool = False
    annotate: bool = False  # write each point's r beside it (Fig. 1)
    drawn: dict[str, dict[str, str]] = field(default_factory=dict)  # panel -> series -> colour, as plotted

    @property
    def panels(self) -> list[str]:
        return list(dict.fromkeys(p.panel for p in self.points))

    def series(self, panel: str) -> dict[str, list[tuple[float, float]]]:
        out: dict[str, list[tuple[float, float]]] = {}
        for p in sorted(self.points, key=lambda p: p.x):
            if p.panel == panel:
                out.setdefault(p.series, []).append((p.x, p.y))
        return out


def natural(text: str) -> list:
    """'d=10' after 'd=2'."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def series_order(name: str) -> tuple:
    """Legend order: the paper's Fig. 3 arms, then the vanilla baseline, then CapaBoost by d."""
    arms = list(FIG3_ARMS.values())
    first = next((i for i, a in enumerate(arms) if name.startswith(a)), len(arms))
    return (first, name.startswith("CapaBoost"), natural(name))


def task_score(cell: Cell, metrics: list[str]) -> Stat | None:
    """Per seed: mean of the task's metrics; then mean ± std over seeds."""
    per_seed, seeds, flags = [], [], set(cell.flags)
    for seed, run in sorted(cell.runs.items()):
        m = metrics_of(run)
        vals = [m.get(k) for k in metrics]
        if vals and all(isinstance(v, (int, float)) for v in vals):
            per_seed.append(math.fsum(vals) / len(vals))
            seeds.append(seed)
    return summarize(per_seed, seeds, flags) if per_seed else None


def _metrics_by_task(layout: Layout) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for c in layout.columns:
        out.setdefault(c.task, []).append(c.metric)
    return out


def lora_grid_rows(view: TableView) -> list[RowView]:
    """Fig. 1 and Fig. 4 rows: LoRA with a rank r on the full training set, vanilla or with random masks."""
    out = []
    for row in view.rows:
        k = row.key
        if row.kind != "ours" or k.get("method") != "lora" or k.get("r") in (None, "per-task recipe"):
            continue
        if k.get("train_limit") or (k.get("capaboost") and k.get("mask") != "random"):
            continue
        out.append(row)
    return out


def _arm(row: RowView, with_density: bool) -> str:
    k = row.key
    if not k["capaboost"]:
        return base_label(k["peft"])
    return f"{base_label(k['peft'])} (d={k['d']}" + (f", density={k['density']:g})" if with_density else ")")


def fig1(view: TableView, layout: Layout, stem: str) -> Figure:
    """Rank of ΔW and the GLUE average (the table's Avg: 11 numbers) against PEFT parameters %."""
    fig = Figure("fig1_rank_params", stem, f"Fig. 1: rank of ΔW and GLUE average vs PEFT parameters "
                 f"({MODEL_LABEL.get(view.table.model, view.table.model) if view.table else ''})",
                 "PEFT parameters (% of the frozen backbone)",
                 {RANK_PANEL: "measured rank of ΔW",
                  GLUE_PANEL: f"GLUE average of {len(layout.columns)} numbers (x100)"},
                 annotate=True)
    rows = lora_grid_rows(view)
    with_density = len({r.key["density"] for r in rows if r.key["capaboost"]}) > 1
    pts = []
    for row in rows:
        series, r = _arm(row, with_density), int(row.key["r"])
        if row.params_pct is None:
            fig.notes.append(f"{row.label}: no parameter count, not plotted")
            continue
        extra = f"r={r}" + (";params_incl_head" if "head_included" in row.params_flags else "")
        if row.rank is not None:
            pts.append(Point(fig.kind, series, RANK_PANEL, row.params_pct, row.rank, 0.0, 1, extra))
        else:
            fig.notes.append(f"{row.label}: no measured rank in its result files, left out of the rank "
                             "panel (d·r is only the Thm 3.1 bound)")
        if row.avg.value is not None:
            pts.append(Point(fig.kind, series, GLUE_PANEL, row.params_pct, row.avg.value, 0.0,
                             row.avg.n or 0, extra + "".join(f";{f}" for f in sorted(row.avg.flags))))
        else:
            fig.notes.append(f"{row.label}: GLUE average needs all {len(layout.columns)} numbers, "
                             "not in the GLUE panel")
    ranks = {p.extra.split(";")[0] for p in pts}
    if len(ranks) < 2 or len(pts) < 3:
        fig.notes = [f"grid absent: {len(pts)} point(s) over {len(ranks)} LoRA rank(s); Fig. 1 needs "
                         "at least two ranks r (sweep fig1_rank_params)"]
        pts = []
    if any("params_incl_head" in p.extra for p in pts):
        fig.xlabel += " (* some: task head included, older files)"
    fig.points = pts
    return fig


def fig3(view: TableView, layout: Layout, stem: str) -> Figure:
    """CoLA/SST-2 on a training subset: score vs sparsity (1 - density), one line per mask arm."""
    by_task = _metrics_by_task(layout)
    rows = [r for r in view.rows if r.kind == "ours" and r.row is not None and r.key.get("train_limit")
            and r.key.get("capaboost")]
    limits = sorted({int(r.key["train_limit"]) for r in rows})
    subset = " and ".join(f"{n / 1000:g}k" if n % 100 == 0 and n >= 1000 else str(n) for n in limits)
    names = " and ".join(layout.task_label(t) for t in FIG3_TASKS)
    fig = Figure("fig3_masks", stem, f"Fig. 3: different masks vs same mask vs dropout only, {names} "
                 f"({subset}-example training subset)", "sparsity (1 - density)", {})
    with_d = len({r.key["d"] for r in rows}) > 1
    with_limit = len(limits) > 1
    pts = []
    for row in rows:
        series = FIG3_ARMS.get(row.key["mask"], f"mask={row.key['mask']}")
        series += (f", d={row.key['d']}" if with_d else "") + (
            f", {row.key['train_limit']} examples" if with_limit else "")
        for task in FIG3_TASKS:
            s = task_score(row.row.cells[task], by_task[task]) if task in row.row.cells else None  # type: ignore[union-attr]
            if s is not None:
                panel = layout.task_label(task)
                fig.ylabels[panel] = f"{panel} score (x100)"
                pts.append(Point(fig.kind, series, panel, round(1.0 - float(row.key["density"]), 10), s.mean,
                                 s.std or 0.0, s.n, f"d={row.key['d']};train_limit={row.key['train_limit']}"
                                 + "".join(f";{f}" for f in sorted(s.flags))))
    # Fig. 3 contrasts mask arms over sparsity: one arm at one sparsity (e.g. the demo's d arms) is none.
    if pts and len({p.series.split(",")[0] for p in pts}) < 2 and len({p.x for p in pts}) < 2:
        fig.notes.append("grid absent: one mask arm at one sparsity; Fig. 3 needs a contrast "
                         "(sweep fig3_masks)")
        pts = []
    fig.points = pts
    return fig


def fig4(view: TableView, layout: Layout, stem: str) -> Figure:
    """Score vs LoRA rank r, one line per d at density 0.5 (d=1: vanilla LoRA), one panel per task."""
    by_task = _metrics_by_task(layout)
    fig = Figure("fig4_r_by_d", stem, f"Fig. 4: LoRA rank r x branches d at density {FIG4_DENSITY:g} "
                 f"({MODEL_LABEL.get(view.table.model, view.table.model) if view.table else ''})",
                 "LoRA rank r", {}, logx=True)
    rows = [r for r in lora_grid_rows(view) if not r.key["capaboost"] or r.key["density"] == FIG4_DENSITY]
    pts = []
    for row in rows:
        series = "LoRA (d=1)" if not row.key["capaboost"] else f"CapaBoost-LoRA (d={row.key['d']})"
        for task in layout.tasks:
            cell = row.row.cells.get(task) if row.row else None
            s = task_score(cell, by_task[task]) if cell else None
            if s is not None:
                pts.append(Point(fig.kind, series, layout.task_label(task), float(row.key["r"]), s.mean,
                                 s.std or 0.0, s.n, "".join(f"{f};" for f in sorted(s.flags)).rstrip(";")))
    kept = []
    for panel in dict.fromkeys(p.panel for p in pts):
        mine = [p for p in pts if p.panel == panel]
        rs, series = {p.x for p in mine}, {p.series for p in mine}
        if len(rs) < 2 or len(series) < 2:
            fig.notes.append(f"{panel}: grid absent ({len(rs)} rank(s) x {len(series)} value(s) of d), "
                             "panel left out; Fig. 4 needs at least two of each (sweep fig4_r_by_d)")
            continue
        fig.ylabels[panel] = f"{panel} score (x100)"
        kept += mine
    fig.points = kept
    return fig


FIGURES: dict[str, Callable[[TableView, Layout, str], Figure]] = {
    "fig1_rank_params": fig1, "fig3_masks": fig3, "fig4_r_by_d": fig4}


def plot(fig: Figure, dpi: int = 100) -> bytes:
    """The PNG: one panel per task, one colour per series in every panel, the legend below the panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = fig.panels
    names = sorted({p.series for p in fig.points}, key=series_order)
    colours = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(names)}
    mpl_fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 0.6, 3.6), squeeze=False,
                                 layout="constrained")  # one draw at save time (tight_layout draws twice)
    for ax, panel in zip(axes[0], panels, strict=True):
        for name in names:
            ps = sorted((p for p in fig.points if p.panel == panel and p.series == name), key=lambda p: p.x)
            if not ps:
                continue
            ax.errorbar([p.x for p in ps], [p.y for p in ps], yerr=[p.yerr for p in ps], marker="o",
                        capsize=3, label=name, color=colours[name])
            if fig.annotate:
                for p in ps:
                    ax.annotate(p.extra.split(";")[0], (p.x, p.y), textcoords="offset points", xytext=(4, 4),
                                fontsize=7, color=colours[name])
        xs = sorted({p.x for p in fig.points if p.panel == panel})
        if fig.logx:
            ax.set_xscale("log", base=2)
        if fig.logx or (not fig.annotate and len(xs) <= 8):  # a grid: tick exactly its values (r, sparsity)
            ax.set_xticks(xs, [f"{x:g}" for x in xs])
            ax.minorticks_off()
        ax.margins(x=0.1, y=0.12)  # room for the r labels
        ax.set_title(panel, fontsize=10)
        fig.drawn[panel] = {c.get_label(): matplotlib.colors.to_hex(c.lines[0].get_color())
                            for c in ax.containers}
        ax.set_xlabel(fig.xlabel, fontsize=8)
        ax.set_ylabel(fig.ylabels.get(panel, ""), fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    handles = {lab: h for ax in axes[0] for h, lab in zip(*ax.get_legend_handles_labels(), strict=True)}
    mpl_fig.legend([handles[n] for n in names if n in handles], [n for n in names if n in handles],
                   loc="outside lower center", ncol=min(4, len(names)), fontsize=8, frameon=False)
    mpl_fig.suptitle(fig.title, fontsize=10)
    buf = io.BytesIO()
    mpl_fig.savefig(buf, format="png", dpi=dpi)
    plt.close(mpl_fig)
    return buf.getvalue()


def points_csv(fig: Figure) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["figure", "panel", "series", "x", "y", "yerr", "n", "extra", "xlabel", "ylabel"])
    for p in fig.points:
        w.writerow([p.figure, p.panel, p.series, f"{p.x:g}", f"{p.y:.4f}", f"{p.yerr:.4f}", p.n, p.extra,
                    fig.xlabel, fig.ylabels.get(p.panel, "")])
    return buf.getvalue()


def build_figures(views: dict[tuple, TableView], layouts: dict[str, Layout]) -> list[Figure]:
    """Every figure each (model, data source) allows, from the runs of the figure's own sweep
    (bucket = the figure's name) or, when no run records that sweep, from the main tables."""
    out = []
    for kind, draw in FIGURES.items():
        own = {k: v for k, v in views.items() if k[1] == "glue" and k[0] == kind}
        pool = own or {k: v for k, v in views.items() if k[1] == "glue" and (k[0] or None) is MAIN}
        for (_bucket, _fam, model, source), view in sorted(pool.items()):
            slug = model.replace("-", "_").replace("/", "_").replace(".", "_")
            stem = f"{kind}_{slug}" + ("" if source == HUB else f"-{source}")
            fig = draw(view, layouts["glue"], stem)
            if source != HUB:
                fig.title += f" [{source} data: not comparable to the paper]"
            out.append(fig)
    return out


def write_figures(figs: list[Figure], out_dir: Path) -> list[Path]:
    """PNG + CSV of the points for every figure that has points."""
    written = []
    for fig in figs:
        if fig.points:
            png = out_dir / f"{fig.stem}.png"
            write_bytes(png, plot(fig))
            write_text(out_dir / f"{fig.stem}.csv", points_csv(fig))
            written.append(png)
    return written
