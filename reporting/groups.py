"""Group runs into (table, row, task) cells over seeds: the config without the training seed.

A row is one method configuration; the cells of a row are its tasks. Everything that changes the
experiment other than the seed and the task is part of the row key, so two configurations never
share a mean (e.g. r=8 vs r=16, 10k training subset vs full data, fixture vs hub data).
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# Row-key fields: name -> where to look in a result (top-level key, then dotted config paths; the
# first non-null value wins). The runner stores the resolved config under result["config"].
ROW_FIELDS: dict[str, tuple[str, ...]] = {
    "peft": ("peft",),
    "d": ("d",),
    "density": ("density",),
    "mask": ("mask",),
    "mask_seed": ("mask_seed", "config.mask_seed"),
    "r": ("config.peft.r", "hparams.r", "config.recipe.{method}.r"),
    "alpha": ("config.peft.alpha", "hparams.alpha", "config.recipe.{method}.alpha"),
    "reduction_factor": ("config.peft.reduction_factor", "hparams.reduction_factor",
                         "config.recipe.{method}.reduction_factor"),
    "prefix_length": ("config.peft.prefix_length", "hparams.prefix_length",
                      "config.recipe.{method}.prefix_length"),
    "protocol": ("config.task.protocol",),
    "train_limit": ("config.data.train_limit",),
    "source": ("config.data.source",),
}
# Fields that only mean something for one PEFT method (dropped elsewhere, so e.g. a LoRA row
# is not split by an adapter reduction factor that sits in the recipe).
METHOD_ONLY = {"r": "lora", "alpha": "lora", "reduction_factor": "padapter", "prefix_length": "prefix"}
# Config sections that are the same for every task of one experiment: any difference in them
# (a trainer override, eval_limit, dropout, a local model path, ...) makes a separate row.
EXTRA_SECTIONS = ("peft", "trainer", "data", "model")
# ...except keys that cannot change the numbers, or are row fields already.
EXTRA_IGNORED = {
    "peft": {"name", "method", "capaboost", "r", "alpha", "reduction_factor", "prefix_length"},
    "trainer": {"progress", "logging_steps", "num_workers", "save_total_limit", "eval_batch_size",
                "use_cpu", "grad_accum"},
    "data": {"source", "train_limit", "path"},  # path: one local dir per task (source says "path")
    "model": set(),
}
HUB = "hub"


def lookup(run: dict[str, Any], paths: Iterable[str], method: str = "") -> Any:
    """First non-null value among top-level keys and dotted config paths, else None."""
    for path in paths:
        node: Any = run
        for part in path.format(method=method).split("."):
            if not isinstance(node, dict) or part not in node:
                node = None
                break
            node = node[part]
        if node is not None:
            return node
    return None


def _flatten(prefix: str, node: Any) -> Iterable[tuple[str, Any]]:
    if isinstance(node, dict):
        for k in sorted(node):
            yield from _flatten(f"{prefix}.{k}", node[k])
    else:
        yield prefix, json.dumps(node, sort_keys=True) if isinstance(node, list) else node


def extra_items(run: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Flattened non-null config entries that are not row fields (e.g. trainer.max_steps=5)."""
    config = run.get("config") if isinstance(run.get("config"), dict) else {}
    out = []
    for section in EXTRA_SECTIONS:
        node = config.get(section)
        if isinstance(node, dict):
            for key, value in node.items():
                if key not in EXTRA_IGNORED[section] and value is not None:
                    out.extend(_flatten(f"{section}.{key}", value))
    return tuple(out)


def row_key(run: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The run's configuration without seed and task, as a hashable, ordered key."""
    method = str(run.get("method") or str(run["peft"]).removeprefix("capaboost_"))
    capaboost = bool(run.get("capaboost", str(run["peft"]).startswith("capaboost")))
    out = []
    for name, paths in ROW_FIELDS.items():
        value = lookup(run, paths, method)
        if name in METHOD_ONLY and METHOD_ONLY[name] != method:
            value = None
        if not capaboost and name in ("d", "density", "mask", "mask_seed"):
            value = None  # vanilla: one branch, no mask, whatever the top-level keys say
        if name == "source" and value is None:
            value = "unknown"
        if isinstance(value, float) and value.is_integer() and name != "density":
            value = int(value)
        out.append((name, value))
    out.append(("extra", extra_items(run)))
    return tuple(out)


@dataclass
class Stat:
    """Mean and sample std (ddof=1) over seeds, in the paper's x100 scale."""

    mean: float
    std: float | None
    n: int
    seeds: tuple[int, ...] = ()


def summarize(values: list[float], seeds: Iterable[int] = ()) -> Stat:
    xs = [100.0 * v for v in values]
    n = len(xs)
    mean = math.fsum(xs) / n
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else None
    return Stat(mean, std, n, tuple(seeds))


@dataclass
class Cell:
    """All seeds of one (row, task)."""

    runs: dict[int, dict[str, Any]] = field(default_factory=dict)  # seed -> run
    duplicates: list[str] = field(default_factory=list)

    def metric(self, name: str) -> Stat | None:
        pairs = [(s, metrics_of(r).get(name)) for s, r in sorted(self.runs.items())]
        pairs = [(s, v) for s, v in pairs if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if not pairs:
            return None
        return summarize([v for _, v in pairs], [s for s, _ in pairs])


def metrics_of(run: dict[str, Any]) -> dict[str, Any]:
    """The paper reports the best epoch (chosen on the select split, measured on the report split)."""
    return run.get("best") or run.get("metrics") or {}


def family_of(task: str) -> str:
    return task.split("/", 1)[0]


def table_name(family: str, model: str) -> str:
    return f"{family}_{model}".replace("-", "_").replace("/", "_").replace(".", "_")


@dataclass
class Table:
    """One (family, model, data source) table: rows keyed by config, cells keyed by task.

    Non-hub data (fixture, local path, unknown) gets its own table file, so it can never sit next
    to the paper's numbers.
    """

    family: str
    model: str
    source: str
    rows: dict[tuple, dict[str, Cell]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        base = table_name(self.family, self.model)
        return base if self.source == HUB else f"{base}-{self.source}"


def build_tables(runs: list[dict[str, Any]]) -> dict[tuple[str, str, str], Table]:
    """Bucket runs by (family, model, source) -> row key -> task -> seed; duplicates are recorded."""
    tables: dict[tuple[str, str, str], Table] = {}
    for run in runs:
        task, model = str(run["task"]), str(run["model"])
        fam = family_of(task)
        key = row_key(run)
        source = str(dict(key)["source"])
        table = tables.setdefault((fam, model, source), Table(fam, model, source))
        cell = table.rows.setdefault(key, {}).setdefault(task, Cell())
        seed = int(run["seed"])
        if seed in cell.runs:
            cell.duplicates.append(run.get("_path", "?"))
        else:
            cell.runs[seed] = run
    return tables
