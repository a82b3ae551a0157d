"""Render a TableView as Markdown (reading), CSV (machine use: one number per cell) and LaTeX (paper)."""
from __future__ import annotations

import csv
import io

from .groups import ROW_FIELDS, Stat
from .tables import RowView, TableView

MISSING = "—"
FULL_SEEDS = 3


def fmt_stat(s: Stat | None, paper: float | None = None, pm: str = "±") -> str:
    if s is None:
        text = MISSING
    else:
        text = f"{s.mean:.2f}" + (f" {pm} {s.std:.2f}" if s.std is not None else "")
        if s.n < FULL_SEEDS:
            text += f" (n={s.n})"
    if paper is not None:
        text += f" (paper {paper:.2f})"
    return text


def _num(x: float | None, paper: float | None = None) -> str:
    text = MISSING if x is None else f"{x:.2f}"
    return text + (f" (paper {paper:.2f})" if paper is not None else "")


def _params(x: float | None, paper: float | None) -> str:
    text = MISSING if x is None else f"{x:.3g}"
    return text + (f" (paper {paper:.3g})" if paper is not None else "")


def header(view: TableView) -> list[str]:
    cols = ["Method"] + [c.label for c in view.layout.columns] + list(view.layout.groups)
    if view.layout.avg != "none":
        cols.append("Avg")
    return cols + ["Params %"]


def row_cells(view: TableView, row: RowView, pm: str = "±") -> list[str]:
    if row.kind == "paper":
        cells = [_num(p) for p in row.paper]
    else:
        cells = [fmt_stat(s, p, pm) for s, p in zip(row.stats, row.paper, strict=True)]
    cells += [_num(row.groups.get(g)) for g in view.layout.groups]
    if view.layout.avg != "none":
        cells.append(_num(row.avg, row.avg_paper) if row.kind == "ours" else _num(row.avg_paper))
    cells.append(_params(row.params_pct, row.params_paper) if row.kind == "ours"
                 else _params(row.params_paper, None))
    return [row.label] + cells


def to_markdown(view: TableView) -> str:
    head = header(view)
    lines = [f"# {view.title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row_cells(view, r)) + " |" for r in view.rows]
    lines += [""] + [f"- {n}" for n in view.notes]
    return "\n".join(lines) + "\n"


def to_csv(view: TableView) -> str:
    """Long-hand numbers: per column mean, std, n and the paper value, plus the row's config fields."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = view.layout.columns
    w.writerow(["table", "kind", "label", *ROW_FIELDS, "extra"]
               + [f"{c.key}:{part}" for c in cols for part in ("mean", "std", "n", "paper")]
               + list(view.layout.groups) + ["avg", "avg_paper", "params_pct", "params_pct_paper"])

    def num(x: float | None) -> str:
        return "" if x is None else f"{x:.4f}"

    for r in view.rows:
        parts = []
        for s, p in zip(r.stats, r.paper, strict=True):
            parts += [num(s.mean if s else None), num(s.std if s else None), str(s.n) if s else "", num(p)]
        extra = ";".join(f"{k}={v}" for k, v in r.key.get("extra", ()))
        fields = ["" if r.key.get(f) is None else r.key.get(f) for f in ROW_FIELDS]
        w.writerow([view.name, r.kind, r.label, *fields, extra] + parts
                   + [num(r.groups.get(g)) for g in view.layout.groups]
                   + [num(r.avg), num(r.avg_paper), num(r.params_pct), num(r.params_paper)])
    return buf.getvalue()


def _tex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("—", "--"), ("ρ", r"$\rho$")):
        text = text.replace(a, b)
    return text


def to_tex(view: TableView) -> str:
    head = header(view)
    lines = [f"% {view.title}", r"\begin{tabular}{l" + "c" * (len(head) - 1) + "}", r"\toprule",
             " & ".join(_tex_escape(h) for h in head) + r" \\", r"\midrule"]
    for r in view.rows:
        cells = [_tex_escape(c).replace("±", r"$\pm$") for c in row_cells(view, r)]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"
