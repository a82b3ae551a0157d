"""Group runs into (table, row, task) cells over seeds.

A row is one experiment apart from its task: `result["identity"]` (every config value that defines
the experiment, written by the runner) minus the task and minus the hyperparameters the per-task
recipe chose (CoLA's lr and RTE's lr differ, yet both belong to the row "LoRA"). The identity is
the one tasks.config.identity defined when the run was resolved; it is read here, never rebuilt. A
result.json with only the required keys (tasks/result.py; the runner always writes `identity`) is
grouped by its top-level CapaBoost coordinates alone (`BARE`), and its data source is unknown.

Seeds of one cell are never chosen by file path: identical duplicates are merged, conflicting ones
are left out of the cell and listed with both paths and values.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tasks.training.baselines import base_method

HUB = "hub"
MAIN = None  # the bucket of the paper's main tables (their sweeps)
SINGLE = "single_runs"  # runs with an identity but no sweep record: launched one by one
PER_TASK = "per-task recipe"  # row-key value of a hyperparameter the task's recipe chose

# Fields that only mean something for one PEFT method, or only for CapaBoost.
METHOD_ONLY = {"r": "lora", "alpha": "lora", "reduction_factor": "padapter", "prefix_length": "prefix",
               "prefix_hidden": "prefix"}
CAPA_ONLY = ("d", "density", "mask", "mask_seed")
BARE = CAPA_ONLY  # a file without identity: its row is its PEFT preset and these top-level keys
# Not part of a row key: the cell's own coordinates (the table holds one model and one source).
# data.path: one local directory per task (data.source says "path").
NOT_ROW = {"task", "seed", "model", "name", "dataset", "main_metric", "family", "data.path"}
# The runner's `selection.rule` values (task.report) that never look at the reported split: the best
# epoch on the select split, or the final epoch (None: a file without `selection`, which is not a required
# key). Any other rule (VTAB's "best_test_epoch") marks the cell as selected on the test set.
DEFAULT_RULES = {None, "best_select_epoch", "final_epoch"}


def lookup(run: dict[str, Any], paths: Iterable[str]) -> Any:
    """First non-null value among top-level keys and dotted config paths, else None."""
    for path in paths:
        node: Any = run
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                node = None
                break
            node = node[part]
        if node is not None:
            return node
    return None


def flatten(node: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    """Dotted leaves of nested dicts; lists become JSON text (hashable, comparable)."""
    if isinstance(node, dict):
        for k in sorted(node):
            yield from flatten(node[k], f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix, json.dumps(node, sort_keys=True) if isinstance(node, list) else node


def _norm(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def method_of(run: dict[str, Any]) -> str:
    return str(run["method"])


def is_capaboost(run: dict[str, Any]) -> bool:
    return bool(run["capaboost"])


def row_identity(run: dict[str, Any]) -> dict[str, Any]:
    """The experiment apart from task and seed, as flat dotted keys (None values dropped).

    A hyperparameter equal to the task recipe's value reads PER_TASK, so one
    method's tasks share a row although their recipes differ; an overridden value stays (r=4).
    """
    ident = run.get("identity")
    if ident is None:
        bare = {k: run.get(k) for k in BARE} if is_capaboost(run) else {}
        return {"peft": str(run["peft"]), **{k: v if k == "density" else _norm(v)
                                             for k, v in bare.items() if v is not None}}
    method, capa = base_method(method_of(run)), is_capaboost(run)  # a PEFT-library baseline: LoRA's fields
    recipe = lookup(run, [f"config.recipe.{method}"]) or {}
    out: dict[str, Any] = {}
    for key, value in flatten(ident):
        leaf = key.rsplit(".", 1)[-1]
        if value is None or key in NOT_ROW or leaf in NOT_ROW or (not capa and leaf in CAPA_ONLY):
            continue
        if leaf in METHOD_ONLY and METHOD_ONLY[leaf] != method:
            continue
        if isinstance(recipe, dict) and leaf in recipe and _same(recipe[leaf], value):
            value = PER_TASK
        out[key] = value if leaf == "density" else _norm(value)
    out.setdefault("peft", str(run["peft"]))
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    return a == b


def field_of(ident: dict[str, Any], name: str) -> Any:
    """A value by its short name (train_limit finds data.train_limit); the shortest key wins."""
    if ident.get(name) is not None:
        return ident[name]
    hits = sorted((k for k in ident if k.rsplit(".", 1)[-1] == name and ident[k] is not None),
                  key=lambda k: (k.count("."), k))
    return ident[hits[0]] if hits else None


def canonical(run: dict[str, Any]) -> dict[str, Any]:
    """The fields figures, paper matching and label ordering need, from any result file."""
    ident = run.get("identity")
    flat = dict(flatten(ident)) if ident is not None else {}
    capa = is_capaboost(run)
    lora_like = base_method(method_of(run)) == "lora"
    r = field_of(flat, "r") if lora_like else None
    if r is None and lora_like:
        r = lookup(run, ["hparams.r", "config.peft.r"])
    source = field_of(flat, "source")
    return {"peft": str(run["peft"]), "method": method_of(run), "capaboost": capa,
            "d": _norm(run["d"]) if capa else 1, "density": run["density"] if capa else 1.0,
            "mask": run["mask"] if capa else None, "r": _norm(r),
            "train_limit": field_of(flat, "train_limit"),
            "source": source or (HUB if ident is not None else "unknown")}


def selection_rule(run: dict[str, Any]) -> Any:
    sel = run.get("selection")
    return sel.get("rule") if isinstance(sel, dict) else None


def run_flags(run: dict[str, Any]) -> set[str]:
    """What a reader must know about this run's numbers (see render.FLAGS)."""
    flags = set()
    if not run.get("best"):
        flags.add("final_epoch")
    if selection_rule(run) not in DEFAULT_RULES:
        flags.add("test_selected")
    return flags


def metrics_of(run: dict[str, Any]) -> dict[str, Any]:
    """The paper reports the best epoch (chosen on the select split, measured on the report split);
    a run without one falls back to its final epoch, and run_flags marks it."""
    return run.get("best") or run.get("metrics") or {}


@dataclass
class Stat:
    """Mean and sample std (ddof=1) over seeds, in the paper's x100 scale."""

    mean: float
    std: float | None
    n: int
    seeds: tuple[int, ...] = ()
    flags: frozenset[str] = frozenset()


def summarize(values: list[float], seeds: Iterable[int] = (), flags: Iterable[str] = ()) -> Stat:
    xs = [100.0 * v for v in values]
    n = len(xs)
    mean = math.fsum(xs) / n
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else None
    return Stat(mean, std, n, tuple(seeds), frozenset(flags))


@dataclass
class Conflict:
    """Two or more result files for one experiment and seed with different numbers."""

    task: str
    seed: int
    files: list[tuple[str, dict[str, Any]]]  # (path, the numbers the table would use)

    def describe(self) -> str:
        return "; ".join(f"{path}: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                                 for k, v in sorted(used.items()))
                         for path, used in self.files)


@dataclass
class Cell:
    """All seeds of one (row, task)."""

    candidates: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # seed -> runs
    runs: dict[int, dict[str, Any]] = field(default_factory=dict)  # seed -> the run used
    merged: list[str] = field(default_factory=list)  # identical duplicates (paths not used)
    conflicts: list[Conflict] = field(default_factory=list)

    def settle(self, task: str) -> None:
        """Merge identical duplicates; leave conflicting seeds out. Independent of file order."""
        for seed, runs in sorted(self.candidates.items()):
            runs = sorted(runs, key=lambda r: r.get("_path", ""))
            numbers = [_numbers(r) for r in runs]
            if all(n == numbers[0] for n in numbers):
                self.runs[seed] = runs[0]
                self.merged += [r.get("_path", "?") for r in runs[1:]]
            else:
                self.conflicts.append(Conflict(task, seed, [(r.get("_path", "?"), n["used"])
                                                            for r, n in zip(runs, numbers, strict=True)]))

    @property
    def flags(self) -> set[str]:
        out = set().union(*(run_flags(r) for r in self.runs.values())) if self.runs else set()
        return out | ({"conflict"} if self.conflicts else set())

    def metric(self, name: str) -> Stat | None:
        pairs = [(s, metrics_of(r).get(name), run_flags(r)) for s, r in sorted(self.runs.items())]
        pairs = [(s, v, f) for s, v, f in pairs if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if not pairs:
            return None
        flags = set().union(*(f for _, _, f in pairs)) | ({"conflict"} if self.conflicts else set())
        return summarize([v for _, v, _ in pairs], [s for s, _, _ in pairs], flags)


def _numbers(run: dict[str, Any]) -> dict[str, Any]:
    return {"used": metrics_of(run), "best": run.get("best"), "metrics": run.get("metrics"),
            "rule": selection_rule(run)}


def family_of(task: str) -> str:
    return task.split("/", 1)[0]


def table_name(family: str, model: str) -> str:
    return f"{family}_{model}".replace("-", "_").replace("/", "_").replace(".", "_")


@dataclass
class Row:
    identity: dict[str, Any]  # row key as a dict (see row_identity)
    canonical: dict[str, Any]
    cells: dict[str, Cell] = field(default_factory=dict)  # task -> cell
    values: dict[str, set] = field(default_factory=dict)  # identity key -> resolved values over runs

    def all_runs(self) -> list[dict[str, Any]]:
        return [r for c in self.cells.values() for r in c.runs.values()]


@dataclass
class Table:
    """One (bucket, family, model, data source) table: rows keyed by identity, cells by task.

    bucket: MAIN (the paper's table: its own sweep's runs, or files without a sweep record), a
    sweep name, or SINGLE. Non-hub data gets its own table, so it never sits beside the paper.
    """

    family: str
    model: str
    source: str
    bucket: str | None = MAIN
    rows: dict[tuple, Row] = field(default_factory=dict)

    @property
    def name(self) -> str:
        base = table_name(self.family, self.model)
        base = base if self.source == HUB else f"{base}-{self.source}"
        return base if self.bucket is MAIN else f"{base}-{self.bucket}"

    @property
    def conflicts(self) -> list[tuple[Row, Conflict]]:
        return [(row, c) for row in self.rows.values() for cell in row.cells.values() for c in cell.conflicts]


def buckets_of(run: dict[str, Any], main_sweeps: Iterable[str]) -> list[str | None]:
    """Which outputs a run belongs to: each sweep that requested it (the family's main sweeps map
    to MAIN); a run launched alone (no sweep): SINGLE."""
    sweeps = run.get("sweeps") or []
    if sweeps:
        return sorted({MAIN if s in set(main_sweeps) else str(s) for s in sweeps}, key=lambda b: b or "")
    return [SINGLE]


def build_tables(runs: list[dict[str, Any]],
                 main_sweeps: dict[str, tuple[str, ...]] | None = None) -> dict[tuple, Table]:
    """Bucket runs by (bucket, family, model, source) -> row -> task -> seed, then settle duplicates."""
    main_sweeps = main_sweeps or {}
    tables: dict[tuple, Table] = {}
    for run in runs:
        task, model = str(run["task"]), str(run["model"])
        fam = family_of(task)
        ident = row_identity(run)
        canon = canonical(run)
        key = tuple(sorted(ident.items(), key=lambda kv: kv[0]))
        raw = dict(flatten(run.get("identity") or {}))
        for bucket in buckets_of(run, main_sweeps.get(fam, ())):
            tkey = (bucket or "", fam, model, str(canon["source"]))
            table = tables.setdefault(tkey, Table(fam, model, str(canon["source"]), bucket))
            row = table.rows.setdefault(key, Row(ident, canon))
            row.cells.setdefault(task, Cell()).candidates.setdefault(int(run["seed"]), []).append(run)
            for k, v in ident.items():
                resolved = raw.get(k, v) if v == PER_TASK else v
                row.values.setdefault(k, set()).add(json.dumps(resolved, sort_keys=True, default=str))
    for table in tables.values():
        for row in table.rows.values():
            for task, cell in row.cells.items():
                cell.settle(task)
    return tables
