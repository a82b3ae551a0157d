"""What one `make tables` did, as lines for the user: files used, left out, unfinished, written."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .collect import Collection


@dataclass
class Report:
    collection: Collection
    tables: list[Path] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    figure_specs: list[Any] = field(default_factory=list)  # figures.Figure: points, notes, axes
    conflicts: list[tuple[str, Any, Any]] = field(default_factory=list)  # (table, Row, Conflict)
    unknown_families: dict[str, int] = field(default_factory=dict)
    removed: list[Path] = field(default_factory=list)
    peft_bench: Any = None  # peft_bench.Bench: PEFT's published rows and our math runs, one table

    @property
    def skipped_figures(self) -> list[str]:
        drawn = {f.kind for f in self.figure_specs if f.points}
        return sorted({f.kind for f in self.figure_specs} - drawn)

    def lines(self) -> list[str]:
        c = self.collection
        out = [f"read {c.n_files} result.json file(s): {len(c.runs)} completed run(s) used"]
        for p in c.problems:
            out.append(f"SKIPPED {p.path}: {p.reason}")
        if c.excluded:
            by = ", ".join(f"{n} {s}" for s, n in sorted(c.excluded.items()))
            out.append(f"excluded {sum(c.excluded.values())} run(s) whose status is not 'completed' ({by}):")
            out += [f"  {p}" for p in c.excluded_paths]
        if c.unfinished:
            out.append(f"{len(c.unfinished)} run dir(s) without result.json (running, or died):")
            out += [f"  {u.line()}" for u in c.unfinished]
        for table, _row, conflict in self.conflicts:
            out.append(f"CONFLICT {table} {conflict.task} seed {conflict.seed}: seed left out; "
                       f"{conflict.describe()}")
        for fam, n in sorted(self.unknown_families.items()):
            out.append(f"no table layout for task family '{fam}' ({n} run(s) not tabulated)")
        if self.peft_bench is not None:
            from .peft_bench import to_markdown

            out += self.peft_bench.lines() + ["", "PEFT's benchmark, MetaMathQA -> GSM8K:",
                                              to_markdown(self.peft_bench)]
        out += [f"wrote {p}" for p in self.tables + self.figures]
        for fig in self.figure_specs:
            out += [f"{fig.stem}: {note}" for note in fig.notes]
        out += [f"removed stale {p} (no runs for it this time)" for p in self.removed]
        missing = [k for k in ("fig1_rank_params", "fig3_masks", "fig4_r_by_d")
                   if k not in {f.kind for f in self.figure_specs if f.points}]
        if missing:
            out.append(f"no figure drawn for: {', '.join(missing)} (no runs, or grid absent: see above)")
        return out
