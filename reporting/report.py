"""`make tables`: result.json files -> results/tables/*.{md,csv,tex} and results/figures/*.png."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .collect import Collection, load_runs
from .figures import write_figures
from .groups import build_tables
from .layout import layouts
from .paper import PAPER_DIR, load_paper
from .render import to_csv, to_markdown, to_tex
from .tables import build_view


@dataclass
class Report:
    collection: Collection
    tables: list[Path] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    skipped_figures: list[str] = field(default_factory=list)
    unknown_families: dict[str, int] = field(default_factory=dict)
    removed: list[Path] = field(default_factory=list)

    def lines(self) -> list[str]:
        c = self.collection
        out = [f"read {c.n_files} result.json file(s): {len(c.runs)} completed run(s) used"]
        for p in c.problems:
            out.append(f"SKIPPED {p.path}: {p.reason}")
        if c.excluded:
            by = ", ".join(f"{n} {s}" for s, n in sorted(c.excluded.items()))
            out.append(f"excluded {sum(c.excluded.values())} run(s) whose status is not 'completed' ({by}):")
            out += [f"  {p}" for p in c.excluded_paths]
        for fam, n in sorted(self.unknown_families.items()):
            out.append(f"no table layout for task family '{fam}' ({n} run(s) not tabulated)")
        out += [f"wrote {p}" for p in self.tables + self.figures]
        out += [f"removed stale {p} (no runs for it this time)" for p in self.removed]
        if self.skipped_figures:
            out.append(f"no runs for figure(s): {', '.join(self.skipped_figures)} (skipped)")
        return out


def make_tables(roots: list[str | os.PathLike], out: str | os.PathLike = "results",
                paper_dir: str | os.PathLike = PAPER_DIR, figures: bool = True) -> Report:
    """Build every table and figure the runs allow; partial sweeps give partial tables."""
    collection = load_runs(roots)
    report = Report(collection)
    lay = layouts()
    tables = build_tables(collection.runs)
    out = Path(out)
    from .output import write_text

    for (family, _model, _source), table in sorted(tables.items()):
        if family not in lay:
            report.unknown_families[family] = report.unknown_families.get(family, 0) + sum(
                len(c.runs) for cells in table.rows.values() for c in cells.values())
            continue
        view = build_view(table, lay[family], load_paper(table.name, paper_dir))
        for ext, render in (("md", to_markdown), ("csv", to_csv), ("tex", to_tex)):
            path = out / "tables" / f"{view.name}.{ext}"
            write_text(path, render(view))
            report.tables.append(path)
    if figures:
        report.figures, report.skipped_figures = write_figures(
            {k: t for k, t in tables.items() if k[0] in lay}, lay, out / "figures")
    report.removed = remove_stale(out, lay, set(report.tables) | set(report.figures), figures)
    return report


def remove_stale(out: Path, lay: dict, written: set[Path], figures: bool) -> list[Path]:
    """Outputs of an earlier `make tables` that this one did not rewrite (their runs are gone or were
    not passed this time): left in place they would be read as current. Only our own file names."""
    from .figures import FIGURES

    stale = [p for fam in lay for ext in ("md", "csv", "tex")
             for p in (out / "tables").glob(f"{fam}_*.{ext}") if p not in written]
    if figures:
        stale += [p for fig in FIGURES for ext in ("png", "csv")
                  for p in (out / "figures").glob(f"{fig}_*.{ext}")
                  if p not in written and p.with_suffix(".png") not in written]
    for p in stale:
        p.unlink()
    return stale
