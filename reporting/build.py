"""`make tables`: result.json files -> results/tables/*.{md,csv,tex} and results/figures/*.{png,csv}.

The paper's main tables hold their own sweep's runs (layouts.yaml `sweeps`; files without a sweep
record count there, as before); every other sweep gets tables of its own (`<table>-<sweep>`), and
each figure is drawn from its own sweep's runs.
"""
from __future__ import annotations

import os
from pathlib import Path

from . import paired, peft_bench
from .collect import load_runs
from .figures import FIGURES, build_figures, write_figures
from .groups import build_tables
from .layout import layouts
from .output import write_text
from .paper import PAPER_DIR, load_paper
from .render import to_csv, to_markdown, to_tex
from .report import Report
from .tables import build_view


def make_tables(roots: list[str | os.PathLike], out: str | os.PathLike = "results",
                paper_dir: str | os.PathLike = PAPER_DIR, figures: bool = True,
                peft_results: list[str | os.PathLike] = ()) -> Report:
    """Build every table and figure the runs allow; partial sweeps give partial tables. ``peft_results``:
    folders of PEFT-format result files, tabulated with the math runs (reporting/peft_bench.py)."""
    collection = load_runs(roots)
    report = Report(collection)
    lay = layouts()
    out = Path(out)
    math_runs = [r for r in collection.runs if r.get("config", {}).get("task", {}).get("family") == "math"]
    if math_runs or peft_results:  # PEFT's benchmark: its own table, not a paper layout
        report.peft_bench = peft_bench.collect(math_runs, list(peft_results))
        report.tables += peft_bench.write(report.peft_bench, out, figures)
    tables = build_tables([r for r in collection.runs if r not in math_runs],
                          {fam: layout.sweeps for fam, layout in lay.items()})
    views = {}
    for key, table in sorted(tables.items()):
        family = key[1]
        if family not in lay:
            report.unknown_families[family] = report.unknown_families.get(family, 0) + sum(
                len(c.runs) for row in table.rows.values() for c in row.cells.values())
            continue
        view = views[key] = build_view(table, lay[family], load_paper(table.name, paper_dir))
        report.conflicts += [(view.name, row, c) for row, c in table.conflicts]
        for ext, render in (("md", to_markdown), ("csv", to_csv), ("tex", to_tex)):
            path = out / "tables" / f"{view.name}.{ext}"
            write_text(path, render(view))
            report.tables.append(path)
        found = paired.pairs(view)
        if found:  # CapaBoost against its matched vanilla row, paired by seed
            path = out / "tables" / f"{view.name}-paired.md"
            write_text(path, paired.to_markdown(view, found))
            report.tables.append(path)
    if figures:
        report.figure_specs = build_figures(views, lay)
        report.figures = write_figures(report.figure_specs, out / "figures")
    report.removed = remove_stale(out, lay, set(report.tables) | set(report.figures), figures)
    return report


def remove_stale(out: Path, lay: dict, written: set[Path], figures: bool) -> list[Path]:
    """Outputs of an earlier `make tables` that this one did not rewrite (their runs are gone or were
    not passed this time): left in place they would be read as current. Only our own file names."""
    stale = [p for fam in lay for ext in ("md", "csv", "tex")
             for p in (out / "tables").glob(f"{fam}_*.{ext}") if p not in written]
    if figures:
        stale += [p for fig in FIGURES for ext in ("png", "csv")
                  for p in (out / "figures").glob(f"{fig}_*.{ext}")
                  if p not in written and p.with_suffix(".png") not in written]
    for p in stale:
        p.unlink()
    return stale
