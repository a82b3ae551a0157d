"""Render a TableView as Markdown (reading), CSV (machine use: one number per cell) and LaTeX (paper).

The three say the same thing: every mark of the .md (†, ‡, §, *) is a flag name in the .csv and
a superscript in the .tex, and the .md's notes are under the .tex table too.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Iterable

from .groups import Stat
from .tables import FLAGS, Avg, RowView, TableView

MISSING = "—"
FULL_SEEDS = 3
CANONICAL = ("peft", "d", "density", "mask", "r", "train_limit", "source")


def marks(flags: Iterable[str]) -> str:
    return "".join(FLAGS[f][0] for f in FLAGS if f in set(flags))


def fmt_stat(s: Stat | None, paper: float | None = None, pm: str = "±") -> str:
    if s is None:
        text = MISSING
    else:
        text = f"{s.mean:.2f}" + (f" {pm} {s.std:.2f}" if s.std is not None else "")
        if s.n < FULL_SEEDS:
            text += f" (n={s.n})"
        text += marks(s.flags)
    if paper is not None:
        text += f" (paper {paper:.2f})"
    return text


def fmt_avg(a: Avg, paper: float | None = None) -> str:
    text = MISSING if a.value is None else f"{a.value:.2f}"
    if a.value is not None and a.n is not None and a.n < FULL_SEEDS:
        text += f" (min n={a.n})"
    text += marks(a.flags) if a.value is not None else ""
    return text + (f" (paper {paper:.2f})" if paper is not None else "")


def _num(x: float | None, paper: float | None = None) -> str:
    text = MISSING if x is None else f"{x:.2f}"
    return text + (f" (paper {paper:.2f})" if paper is not None else "")


def _params(x: float | None, flags: Iterable[str], paper: float | None) -> str:
    text = MISSING if x is None else f"{x:.3g}" + marks(flags)
    return text + (f" (paper {paper:.3g})" if paper is not None else "")


def header(view: TableView) -> list[str]:
    lay = view.layout
    cols = ["Method"] + [c.label for c in lay.columns] + [g.capitalize() for g in lay.groups]
    if lay.avg == "columns":
        cols.append("Avg")
    elif lay.avg == "groups":
        cols += [f"Avg ({len(lay.columns)})", "Avg (groups)"]
    if lay.rank:
        cols.append("Rank")
    return cols + ["Params %"]


def row_cells(view: TableView, row: RowView, pm: str = "±") -> list[str]:
    lay = view.layout
    ours = row.kind == "ours"
    if ours:
        cells = [fmt_stat(s, p, pm) for s, p in zip(row.stats, row.paper, strict=True)]
        cells += [fmt_avg(row.groups.get(g, Avg(None)), row.groups_paper.get(g)) for g in lay.groups]
    else:
        cells = [_num(p) for p in row.paper] + [_num(row.groups_paper.get(g)) for g in lay.groups]
    if lay.avg in ("columns", "groups"):
        cells.append(fmt_avg(row.avg, row.avg_paper) if ours else _num(row.avg_paper))
    if lay.avg == "groups":
        cells.append(fmt_avg(row.avg_groups) if ours else MISSING)
    if lay.rank:
        cells.append(MISSING if row.rank is None else f"{row.rank:.1f}")
    cells.append(_params(row.params_pct, row.params_flags, row.params_paper) if ours
                 else _params(row.params_paper, (), None))
    return [row.label] + cells


def to_markdown(view: TableView) -> str:
    head = header(view)
    lines = [f"# {view.title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row_cells(view, r)) + " |" for r in view.rows]
    lines += [""] + [f"- {n}" for n in view.notes]
    return "\n".join(lines) + "\n"


def to_csv(view: TableView) -> str:
    """Long-hand numbers: per column mean, std, n, flags and the paper value, plus the row's config."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    lay = view.layout
    w.writerow(["table", "kind", "label", *CANONICAL, "identity"]
               + [f"{c.key}:{part}" for c in lay.columns for part in ("mean", "std", "n", "flags", "paper")]
               + [f"{c.key}:{part}" for c in lay.extra for part in ("mean", "std", "n", "flags")]
               + [x for g in lay.groups for x in (g, f"{g}:paper")]
               + ["avg", "avg_min_n", "avg_flags", "avg_paper", "avg_groups", "rank", "params_pct",
                  "params_flags", "params_pct_paper", "reference", "params_pct_training"])

    def num(x: float | None) -> str:
        return "" if x is None else f"{x:.4f}"

    def flags(fs: Iterable[str]) -> str:
        return ";".join(f for f in FLAGS if f in set(fs))

    for r in view.rows:
        parts = []
        for s, p in zip(r.stats, r.paper, strict=True):
            parts += [num(s.mean if s else None), num(s.std if s else None), str(s.n) if s else "",
                      flags(s.flags) if s else "", num(p)]
        for s in r.extra_stats or [None] * len(lay.extra):
            parts += [num(s.mean if s else None), num(s.std if s else None), str(s.n) if s else "",
                      flags(s.flags) if s else ""]
        for g in lay.groups:
            parts += [num(r.groups.get(g, Avg(None)).value), num(r.groups_paper.get(g))]
        ident = ";".join(f"{k}={v}" for k, v in sorted(r.identity.items()))
        fields = ["" if r.key.get(f) is None else r.key.get(f) for f in CANONICAL]
        w.writerow([view.name, r.kind, r.label, *fields, ident] + parts
                   + [num(r.avg.value), "" if r.avg.n is None else r.avg.n, flags(r.avg.flags),
                      num(r.avg_paper), num(r.avg_groups.value), num(r.rank), num(r.params_pct),
                      flags(r.params_flags), num(r.params_paper), r.reference, num(r.params_pct_training)])
    return buf.getvalue()


TEX_SYMBOLS = (("±", r"$\pm$"), ("—", "--"), ("ΔW", r"$\Delta W$"), ("Δ", r"$\Delta$"), ("≥", r"$\geq$"),
               ("ρ", r"$\rho$"), ("†", r"$^{\dagger}$"), ("‡", r"$^{\ddagger}$"), ("§", r"\S{}"))


TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    out = []
    for ch in text:
        out.append(TEX_SPECIAL.get(ch, ch))
    text = "".join(out)
    for a, b in TEX_SYMBOLS:
        text = text.replace(a, b)
    return text


def _tex_cell(text: str) -> str:
    # the "older params" mark is a trailing * on a number; elsewhere * is text
    text = tex_escape(text)
    return text[:-1] + r"$^{*}$" if text.endswith("*") else text.replace("* (paper", r"$^{*}$ (paper")


def to_tex(view: TableView) -> str:
    head = header(view)
    lines = [f"% {view.title}",
             r"% Requires \usepackage{booktabs} (\toprule, \midrule, \bottomrule).",
             r"\begin{tabular}{l" + "c" * (len(head) - 1) + "}", r"\toprule",
             " & ".join(tex_escape(h) for h in head) + r" \\", r"\midrule"]
    for r in view.rows:
        lines.append(" & ".join(_tex_cell(c) for c in row_cells(view, r)) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\par\smallskip", r"{\footnotesize"]
    lines += [tex_escape(n) + r"\par" for n in view.notes]
    lines.append("}")
    return "\n".join(lines) + "\n"
