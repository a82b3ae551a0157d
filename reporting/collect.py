"""Find and validate result.json files: a bad file is reported by path and skipped, never fatal.

A sweep that is still running, was preempted, or crashed leaves partial trees behind; the tables
must still be built from what finished, and the user must see exactly which files were left out.
A file must be a result of the schema (tasks/result.py: every key, its type, the version) and its
metrics table cells (finite fractions).
"""
from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks import result as schema

# Correlation metrics live in [-1, 1]; every other metric is a fraction in [0, 1] (never x100).
SIGNED = ("mcc", "pearson", "spearman")


@dataclass
class Problem:
    """A result file that could not be used, and why (shown to the user by path)."""

    path: str
    reason: str


@dataclass
class Unfinished:
    """A run directory with a status.json but no result.json: running, or died without a result."""

    path: str
    status: str
    host: str = "?"
    pid: Any = "?"
    updated: str = "?"
    error: str = ""

    def line(self) -> str:
        text = f"{self.status} {self.path} (host {self.host}, pid {self.pid}, last update {self.updated})"
        return text + (f": {self.error}" if self.error else "")


@dataclass
class Collection:
    runs: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    excluded: Counter = field(default_factory=Counter)  # status -> count (status != completed)
    excluded_paths: list[str] = field(default_factory=list)
    n_files: int = 0
    unfinished: list[Unfinished] = field(default_factory=list)


def find_result_files(roots: list[str | os.PathLike], status_only: list[Path] | None = None) -> list[Path]:
    """Every result.json under the roots, sorted, each once (roots may overlap); directories with
    only a status.json are appended to `status_only`."""
    missing = [str(r) for r in roots if not Path(r).is_dir()]
    if missing:
        raise FileNotFoundError(f"--runs directory not found: {', '.join(missing)} "
                                f"(run a sweep first, or pass RUNS=<dir with result.json files>)")
    found: set[Path] = set()
    waiting: set[Path] = set()
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            if schema.RESULT in files:
                found.add(Path(dirpath, schema.RESULT).resolve())
            elif schema.STATUS in files:  # the runner's heartbeat: a run that is running, or died
                waiting.add(Path(dirpath, schema.STATUS).resolve())
    if status_only is not None:
        status_only.extend(sorted(waiting))
    return sorted(found)


def read_status(path: Path) -> Unfinished:
    """What a status.json says (an unreadable one is reported as such, never fatal)."""
    try:
        with open(path, encoding="utf-8") as f:
            st = json.load(f)
        if not isinstance(st, dict):
            raise ValueError("not a JSON object")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return Unfinished(str(path.parent), "unknown", error=f"unreadable status.json: {e}")
    found = Unfinished(str(path.parent), str(st.get("status", "unknown")), str(st.get("host", "?")),
                       st.get("pid", "?"), str(st.get("updated", st.get("started", "?"))),
                       str(st.get("error") or ""))
    if found.status == "running":   # a SIGKILL leaves "running": the run lock says whether it still is
        from tasks.cluster.runstate import state_of

        state, detail, _ = state_of(path.parent)
        if state == "dead":
            found.status, found.error = "dead", detail
    return found


def _metric_problem(metrics: Any, where: str) -> str | None:
    if not isinstance(metrics, dict):
        return f"'{where}' is not a mapping"
    for name, value in metrics.items():
        # every metric is a table cell: a string ("0.99"), null, NaN or Infinity would become "nan ± nan"
        # or break the paired step, so the whole file is refused by name (json.load reads bare NaN)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"metric {where}.{name}={json.dumps(value)} is not a number"
        if not math.isfinite(value):
            return f"metric {where}.{name}={value} is not finite (not a table cell)"
        low = -1.0 if name in SIGNED else 0.0
        if name in SIGNED or name in {"accuracy", "f1", "exact_match", "accuracy_mismatched"}:
            if not low - 1e-9 <= value <= 1.0 + 1e-9:
                return f"metric {where}.{name}={value} is not a fraction (x100 scale is not used)"
    return None


def validate(run: Any) -> str | None:
    """Why this parsed result cannot be used, or None when it can."""
    why = schema.problem(run)
    if why:
        return why
    if run["status"] == "completed" and not (run["best"] or run["metrics"]):
        return "completed but has neither 'best' nor 'metrics'"
    for where in ("best", "metrics"):
        if run[where] is not None:
            why = _metric_problem(run[where], where)
            if why:
                return why
    return None


def load_runs(roots: list[str | os.PathLike]) -> Collection:
    """Parse every result.json under the roots; keep completed, valid ones."""
    out = Collection()
    waiting: list[Path] = []
    for path in find_result_files(roots, waiting):
        out.n_files += 1
        try:
            run = schema.parse(path.read_bytes())
        except (OSError, ValueError) as e:
            out.problems.append(Problem(str(path), f"unreadable JSON: {e}"))
            continue
        why = validate(run)
        if why:
            out.problems.append(Problem(str(path), why))
            continue
        if run["status"] != "completed":
            out.excluded[str(run["status"])] += 1
            out.excluded_paths.append(str(path))
            continue
        run["_path"] = str(path)
        out.runs.append(run)
    out.unfinished = [read_status(p) for p in waiting]
    return out
