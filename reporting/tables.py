"""Turn grouped runs into the paper's table rows: our mean ± std per column, paper values beside.

Paper values appear only in the main hub-data tables whose model matches the paper's row; an
average is shown only when every column it averages has a number (a partial average would not be
comparable with the paper's).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field, fields
from typing import Any

from omegaconf import MISSING as REQUIRED  # the schema's keys without a default

from tasks.config.schema import Config, DataConf, PeftConf, TaskConf, TrainerConf
from tasks.data import digests
from tasks.training.baselines import base_method, is_baseline

from .groups import CAPA_ONLY, HUB, MAIN, PER_TASK, SINGLE, Row, Stat, Table, field_of, run_flags
from .layout import Layout
from .paper import PaperRow

PEFT_LABEL = {"lora": "LoRA", "padapter": "PAdapter", "prefix": "Prefix", "dora": "DoRA", "rslora": "rsLoRA",
              # then tasks.training.baselines'
              "pissa": "PiSSA", "vera": "VeRA", "loha": "LoHa", "adalora": "AdaLoRA"}
METHOD_ORDER = {"lora": 0, "padapter": 1, "prefix": 2, "dora": 3, "rslora": 4, "pissa": 5, "vera": 6,
                "loha": 7, "adalora": 8}
FAMILY_LABEL = {"glue": "GLUE", "squad": "SQuAD", "vtab": "VTAB-1k"}
MODEL_LABEL = {"roberta-base": "RoBERTa-base", "roberta-large": "RoBERTa-large",
               "deberta-v3-base": "DeBERTa-v3-base", "vit-b16": "ViT-B/16", "minilm": "MiniLM"}
# Shown in every CapaBoost row label (the paper's convention); other fields only when they differ
# between the table's rows, and never at their default value.
ALWAYS = ("d", "density")
METHOD_HPARAMS = {"r", "alpha", "reduction_factor", "prefix_length", "prefix_hidden"}
NEVER = {"peft", "method", "capaboost", "source", "identity_key"}  # names or last parts of identity keys
# What a marked number means; the marks are the same in .md, .csv (flag names) and .tex.
FLAGS: dict[str, tuple[str, str]] = {
    "final_epoch": ("†", "at least one seed has no best-epoch result: its final epoch is used"),
    "test_selected": ("‡", "at least one seed chose its epoch on the test set (selection rule {rules}): "
                           "an optimistic number, not a held-out estimate"),
    "conflict": ("§", "conflicting duplicate results for a seed: that seed is left out (files listed below)"),
    "head_included": ("*", "older result files without a PEFT-only count: effective trainable "
                           "parameters, task head included"),
}

KNOBS = ("d", "density", "mask")


def schema_defaults() -> dict[str, Any]:
    """Each setting's default by its last name, read from the typed schema (tasks/config/schema.py), the
    one address of defaults: a value at its default is named in neither a row label nor the "Every row:"
    note. d, density and mask are left out: a row names the method's own knobs whatever their value."""
    out: dict[str, Any] = {}
    for section in (PeftConf, TaskConf, TrainerConf, DataConf, Config):
        for f in fields(section):
            if f.default not in (dataclasses.MISSING, REQUIRED) and f.name not in KNOBS:
                out.setdefault(f.name, f.default)
    return out


DEFAULTS = schema_defaults()


@dataclass
class Avg:
    value: float | None
    n: int | None = None  # fewest seeds among the averaged cells
    flags: frozenset[str] = frozenset()


@dataclass
class RowView:
    label: str
    kind: str  # "ours" | "paper"
    key: dict[str, Any]  # canonical fields (peft, d, density, mask, r, train_limit, source)
    identity: dict[str, Any]
    stats: list[Stat | None]
    paper: list[float | None]
    avg: Avg = field(default_factory=lambda: Avg(None))
    avg_paper: float | None = None
    groups: dict[str, Avg] = field(default_factory=dict)
    groups_paper: dict[str, float | None] = field(default_factory=dict)
    avg_groups: Avg = field(default_factory=lambda: Avg(None))
    params_pct: float | None = None
    params_flags: frozenset[str] = frozenset()
    params_pct_training: float | None = None  # prefix: with the training-time MLP (.csv only)
    params_paper: float | None = None
    rank: float | None = None
    reference: str = ""
    extra_stats: list[Stat | None] = field(default_factory=list)
    row: Row | None = None


@dataclass
class TableView:
    name: str
    title: str
    layout: Layout
    source: str
    rows: list[RowView]
    notes: list[str]
    table: Table | None = None


def base_label(peft: str) -> str:
    method = peft.removeprefix("capaboost_")
    name = PEFT_LABEL.get(method, method)
    return f"CapaBoost-{name}" if peft.startswith("capaboost") else name


def _fmt_value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _display(row: Row, key: str) -> Any:
    """The value a reader should see: a method hyperparameter the recipe set to the same value for
    every task shows as that value (r=8); other recipe values read 'per-task recipe' (not shown)."""
    value = row.identity.get(key)
    if value == PER_TASK and key.rsplit(".", 1)[-1] in METHOD_HPARAMS:
        seen = row.values.get(key, set())
        return json.loads(next(iter(seen))) if len(seen) == 1 else PER_TASK
    return value


def _is_default(leaf: str, value: Any) -> bool:
    if value is None or value == PER_TASK:
        return True
    return leaf in DEFAULTS and value == DEFAULTS[leaf] and not isinstance(value, bool)


def _part(name: str, value: Any) -> str:
    if name.rsplit(".", 1)[-1] == "train_limit" and isinstance(value, int):
        n = f"{value / 1000:g}k" if value >= 1000 and value % 100 == 0 else str(value)
        return f"{n}-example training subset"
    return f"{name}={_fmt_value(value)}"


def row_labels(rows: list[Row]) -> list[str]:
    """Base PEFT name, d/density for CapaBoost, and every non-default field that differs between
    the table's rows. Labels that would still be equal get the row's identity digest."""
    keys = sorted({k for row in rows for k in row.identity if k.rsplit(".", 1)[-1] not in NEVER})
    shown = {k: [_display(row, k) for row in rows] for k in keys}
    # one setting recorded twice in today's identity (capaboost.r and hparams.r, tasks/result.py says
    # why): keep the first of equal twins
    for k in list(keys):
        if any(o != k and o in shown and o.rsplit(".", 1)[-1] == k.rsplit(".", 1)[-1] and shown[o] == shown[k]
               for o in keys[:keys.index(k)]):
            keys.remove(k)
            del shown[k]
    methods = [base_method(str(row.canonical["method"])) for row in rows]  # baselines: with LoRA's r, alpha

    def differs(k: str) -> bool:
        # a method's own hyperparameter (r, reduction_factor, ...) only against rows of that method
        # and a CapaBoost setting (mask, d, ...) only against CapaBoost rows
        leaf = k.rsplit(".", 1)[-1]
        if leaf in METHOD_HPARAMS:
            groups = [[v for v, m in zip(shown[k], methods, strict=True) if m == method]
                      for method in set(methods)]
        elif leaf in CAPA_ONLY:
            groups = [[v for v, row in zip(shown[k], rows, strict=True) if row.canonical["capaboost"]]]
        else:
            groups = [shown[k]]
        return any(len({json.dumps(v, sort_keys=True, default=str) for v in g}) > 1 for g in groups)

    varying = [k for k in keys if differs(k)]
    leaves = [k.rsplit(".", 1)[-1] for k in varying]
    out = []
    for i, row in enumerate(rows):
        capa = bool(row.canonical["capaboost"])
        parts = [_part(f, field_of(row.identity, f)) for f in ALWAYS
                 if capa and field_of(row.identity, f) is not None]
        for k, leaf in zip(varying, leaves, strict=True):
            value = shown[k][i]
            if leaf in ALWAYS and capa or _is_default(leaf, value):
                continue
            name = leaf if leaves.count(leaf) == 1 else k
            parts.append(_part(name, value))
        out.append(base_label(str(row.canonical["peft"])) + (f" ({', '.join(parts)})" if parts else ""))
    for label in {x for x in out if out.count(x) > 1}:
        for i in [i for i, x in enumerate(out) if x == label]:
            digest = hashlib.sha256(json.dumps(rows[i].identity, sort_keys=True, default=str).encode())
            out[i] = f"{label} [id {digest.hexdigest()[:6]}]"
    return out


def _natural(value: Any) -> tuple:
    return (0, float(value), "") if isinstance(value, (int, float)) else (1, 0.0, str(value))


def _sort_key(row: Row) -> tuple:
    c = row.canonical
    return (METHOD_ORDER.get(c["method"], 9), c["method"], c["capaboost"], _natural(c["train_limit"] or 0),
            _natural(c["d"]), _natural(c["density"]), _natural(c["r"] or 0),
            tuple((k, _natural(v)) for k, v in sorted(row.identity.items())))


def params_pct(runs: list[dict[str, Any]], training: bool = False) -> tuple[float | None, frozenset[str]]:
    """PEFT weights / frozen backbone weights (total - trainable), %, mean over runs.

    `params["peft"]` (PEFT-module entries some mask keeps, no task head) is the paper's count; for
    prefix tuning the tables use `prefix_inference` (length x 2 x layers x hidden: what inference keeps,
    what PEFT papers quote) unless ``training`` (the count with the reparameterisation MLP, .csv only).
    Older files only have `effective` (head included): used and flagged."""
    pcts, flags = [], set()
    for run in runs:
        p = run.get("params") or {}
        tot, tr = p.get("total"), p.get("trainable") or 0
        count = p.get("peft") if training or "prefix_inference" not in p else p["prefix_inference"]
        if not isinstance(count, (int, float)) or isinstance(count, bool):
            count = p.get("effective")
            if isinstance(count, (int, float)):
                flags.add("head_included")
        if isinstance(count, (int, float)) and isinstance(tot, (int, float)) and tot > 0:
            backbone = tot - tr if tot - tr > 0 else tot
            pcts.append(100.0 * count / backbone)
    return (math.fsum(pcts) / len(pcts) if pcts else None), frozenset(flags if pcts else ())


def measured_rank(runs: list[dict[str, Any]]) -> float | None:
    """Mean measured rank of ΔW (result["rank"]["mean"], capaboost.analysis.rank_summary)."""
    ranks = [r["rank"]["mean"] for r in runs
             if isinstance(r.get("rank"), dict) and isinstance(r["rank"].get("mean"), (int, float))]
    return math.fsum(ranks) / len(ranks) if ranks else None


def average(stats: list[Stat | None]) -> Avg:
    """Mean of cell means, only when every cell has one; carries the fewest seeds and the flags."""
    if not stats or any(s is None for s in stats):
        return Avg(None)
    flags = frozenset().union(*(s.flags for s in stats))  # type: ignore[union-attr]
    return Avg(math.fsum(s.mean for s in stats) / len(stats), min(s.n for s in stats), flags)  # type: ignore[union-attr]


def _mean(xs: list[float | None]) -> float | None:
    return math.fsum(xs) / len(xs) if xs and all(x is not None for x in xs) else None  # type: ignore[arg-type]


def build_view(table: Table, layout: Layout, paper_rows: list[PaperRow]) -> TableView:
    """Our rows (sorted in the paper's method order) and the paper's reference rows."""
    use_paper = table.source == HUB and table.bucket is MAIN
    paper_rows = [p for p in paper_rows if p.model == table.model] if use_paper else []
    rows = sorted(table.rows.values(), key=_sort_key)
    labels = row_labels(rows)
    # A paper row sits beside ours only when exactly one of our rows matches it (e.g. not beside
    # each of LoRA r=4/8/16 from a rank sweep); otherwise it is shown as a row of its own.
    hits = {id(p): [i for i, row in enumerate(rows) if p.matches(row.canonical)] for p in paper_rows}
    beside = {hits[id(p)][0]: p for p in paper_rows if len(hits[id(p)]) == 1}
    matched = {id(p) for p in beside.values()}
    views: list[RowView] = []
    for i, (row, label) in enumerate(zip(rows, labels, strict=True)):
        stats = [row.cells[c.task].metric(c.metric) if c.task in row.cells else None for c in layout.columns]
        extra = [row.cells[c.task].metric(c.metric) if c.task in row.cells else None for c in layout.extra]
        paper = beside.get(i)
        runs = row.all_runs()
        pct, pflags = params_pct(runs)
        view = RowView(label, "ours", row.canonical, row.identity, stats,
                       [paper.values.get(c.key) if paper else None for c in layout.columns],
                       params_pct=pct, params_flags=pflags, params_pct_training=params_pct(runs, True)[0],
                       params_paper=paper.values.get("params_pct") if paper else None,
                       rank=measured_rank(runs), reference=paper.reference if paper else "",
                       extra_stats=extra, row=row)
        _fill_averages(view, layout, paper)
        views.append(view)
    refs = []
    for p in paper_rows:
        if not p.has_values or id(p) in matched:
            continue
        ref = RowView(f"{p.method} (paper)", "paper", {"peft": p.peft}, {}, [None] * len(layout.columns),
                      [p.values.get(c.key) for c in layout.columns], params_paper=p.values.get("params_pct"),
                      reference=p.reference)
        _fill_averages(ref, layout, p)
        refs.append(ref)
    notes = _notes(table, layout) + common_note(rows) + flag_notes(views, table)
    return TableView(table.name, title(table), layout, table.source, refs + views, notes, table)


def common_note(rows: list[Row]) -> list[str]:
    """Settings every row shares that a reader would not assume (a training subset, dropout 0.1)."""
    keys = sorted({k for row in rows for k in row.identity if k.rsplit(".", 1)[-1] not in NEVER
                   and not k.startswith(("model.", "task."))})  # the title names model and task
    parts: list[str] = []
    seen: set[str] = set()
    for k in keys:
        values = {json.dumps(_display(row, k), sort_keys=True, default=str) for row in rows}
        leaf = k.rsplit(".", 1)[-1]
        if len(values) == 1 and all(k in row.identity and row.identity[k] != PER_TASK for row in rows) \
                and leaf not in ALWAYS:
            value = _display(rows[0], k)
            if not _is_default(leaf, value) and leaf not in METHOD_HPARAMS | seen and leaf != "protocol":
                parts.append(_part(leaf, value))
                seen.add(leaf)
    return [f"Every row: {', '.join(parts)}."] if parts and len(rows) > 0 else []


def mark_notes(used: set[str], runs: list[dict[str, Any]]) -> list[str]:
    """One line per mark in use, naming the selection rules behind any ‡."""
    from .groups import selection_rule

    rules = sorted({str(selection_rule(r)) for r in runs if "test_selected" in run_flags(r)})
    return [f"{FLAGS[f][0]}: {FLAGS[f][1].format(rules=', '.join(rules))}" for f in FLAGS if f in used]


def flag_notes(views: list[RowView], table: Table) -> list[str]:
    """One note per mark in use, then every conflicting duplicate and merged identical file."""

    used = set().union(*(set(s.flags) for v in views for s in v.stats + v.extra_stats if s is not None),
                       *(set(v.params_flags) for v in views)) if views else set()
    notes = mark_notes(used, [r for v in views if v.row for r in v.row.all_runs()])
    labels = {id(v.row): v.label for v in views if v.row is not None}
    for row, c in table.conflicts:
        notes.append(f"§ conflicting duplicates, {labels.get(id(row), '?')} {c.task} seed {c.seed} "
                     f"(left out): {c.describe()}")
    merged = sorted(p for row in table.rows.values() for cell in row.cells.values() for p in cell.merged)
    if merged:
        notes.append(f"Merged {len(merged)} identical duplicate result(s) of a seed already counted: "
                     f"{', '.join(merged)}")
    return notes


def _fill_averages(view: RowView, layout: Layout, paper: PaperRow | None) -> None:
    if layout.avg == "none":
        return
    cols = list(layout.columns)
    view.avg = average(view.stats) if view.kind == "ours" else Avg(None)
    view.avg_paper = paper.values.get("avg") if paper else None
    if layout.avg == "groups":
        for g in layout.groups:
            view.groups[g] = average([s for c, s in zip(cols, view.stats, strict=True) if c.group == g]) \
                if view.kind == "ours" else Avg(None)
            view.groups_paper[g] = paper.values.get(g) if paper else None
        group_avgs = [view.groups[g] for g in layout.groups]
        if all(a.value is not None for a in group_avgs):
            view.avg_groups = Avg(_mean([a.value for a in group_avgs]), min(a.n or 0 for a in group_avgs),
                                  frozenset().union(*(a.flags for a in group_avgs)))


def title(table: Table) -> str:
    fam = FAMILY_LABEL.get(table.family, table.family)
    model = MODEL_LABEL.get(table.model, table.model)
    text = f"{fam} on {model}"
    if table.bucket == SINGLE:
        text += ", runs launched outside a sweep"
    elif table.bucket is not MAIN:
        text += f", runs of sweep {table.bucket}"
    if table.source == "path" and path_data(table)[0]:
        text += " (path data: copies of the official splits, by content digest)"
    elif table.source == "path":
        text += " (path data: NOT comparable to the paper; digests in the notes)"
    elif table.source != HUB:
        text += f" ({table.source} data: NOT comparable to the paper)"
    return text


def _short(found: dict[str, str] | None) -> str:
    return ", ".join(f"{split} {d}" for split, d in found.items()) if found else "none recorded"


def path_data(table: Table) -> tuple[bool, list[str]]:
    """A table of runs on ``data.path``: (each task's data is a copy of the official splits, one note
    per task). A copy is official when its splits' content digests (result.json ``data_digest``) equal
    those ``make prefetch`` recorded for the hub's dataset (tasks.data.digests)."""
    record = digests.official()
    by_task: dict[str, set[str]] = {}
    for row in table.rows.values():
        for task, cell in row.cells.items():
            for run in cell.runs.values():
                by_task.setdefault(task, set()).add(json.dumps(run.get("data_digest"), sort_keys=True))
    notes, official = [], bool(by_task)
    for task in sorted(by_task):
        found = [json.loads(d) for d in sorted(by_task[task])]
        name = digests.copy_of(found[0], record) if len(found) == 1 else None
        if name:
            notes.append(f"{task}: path data, a copy of the official {name} splits (digests "
                         f"{_short(found[0])} equal make prefetch's record).")
        else:
            official = False
            notes.append(f"{task}: path data, digests {' / '.join(_short(f) for f in found)}: not a copy of "
                         f"the official splits make prefetch recorded ({digests.OFFICIAL.name}).")
    return official, notes


def _notes(table: Table, layout: Layout) -> list[str]:
    notes = ["Cells: mean ± sample std (ddof=1) over training seeds, x100, at the epoch chosen on the "
             "selection split, measured on the report split; (n=k): fewer than 3 seeds; —: no run."]
    notes.append("Params %: PEFT weights kept by some mask (task head excluded) / frozen backbone "
                 "weights (total - trainable).")
    runs = [r for row in table.rows.values() for r in row.all_runs()]
    if any("prefix_inference" in (r.get("params") or {}) for r in runs):
        notes.append("Params % of prefix rows: the prefix kept at inference (prefix length x 2 x layers x "
                     "hidden), as PEFT papers quote it; with the training-time reparameterisation MLP: "
                     "params_pct_training in the .csv, params in result.json.")
    if layout.rank:
        notes.append("Rank: measured rank of ΔW (LoRA layers), mean over layers and runs; — for methods "
                     "without a LoRA update.")
        if any(is_baseline(str(row.canonical["method"])) for row in table.rows.values()):
            notes.append("PEFT-library baselines (huggingface/peft): Rank is that of the ΔW PEFT computes "
                         "(DoRA: B A, before its magnitude rescale; LoHa: up to r²; AdaLoRA: the ranks left "
                         "after pruning), and Params % counts VeRA's trained vectors only and AdaLoRA's "
                         "budget after pruning.")
    if layout.avg == "columns":
        notes.append(f"Avg: mean of the {len(layout.columns)} numbers of the row (the paper's convention: "
                     "MRPC, QQP and STS-B count twice), shown only when every one has a value; "
                     "(min n=k): its cells have as few as k seeds.")
    elif layout.avg == "groups":
        groups = ", ".join(f"{g} ({sum(c.group == g for c in layout.columns)})" for g in layout.groups)
        notes.append(f"Group columns: mean of the group's datasets: {groups}. "
                     f"Avg ({len(layout.columns)}): mean of all {len(layout.columns)} datasets. "
                     f"Avg (groups): mean of the {len(layout.groups)} group means (the convention of many "
                     "VTAB-1k papers). Shown only when complete; (min n=k): as few as k seeds.")
    for c in layout.columns:
        if c.note:
            notes.append(f"{c.label}: {c.note}.")
    if table.source == HUB and table.bucket is MAIN:
        notes.append("(paper x): the published value (results/paper/), only for the matching model "
                     "and configuration.")
    elif table.source == "path" and path_data(table)[0]:
        notes.append("These runs read local copies whose content equals the official splits: their "
                     "numbers compare with published ones as the hub runs' do.")
        notes += path_data(table)[1]
    elif table.source != HUB:
        notes.append(f"These runs used {table.source} data, not the official datasets: "
                     "never compare them with published numbers.")
        notes += path_data(table)[1] if table.source == "path" else []
    return notes
