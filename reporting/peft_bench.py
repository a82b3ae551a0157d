"""One table and one figure for PEFT's decoder benchmark: PEFT's published rows beside ours.

Both kinds of rows come from PEFT-format files (tasks/peft_result.py): PEFT's own (``PEFT_RESULTS``,
e.g. results/peft_bench/) and the ``peft_result.json`` every task=math/gsm8k run writes beside its
result.json (found under the run roots). The figure plots GSM8K test accuracy against trainable
parameters (log scale), marks the two origins apart and draws the Pareto front over all points (the
best accuracy at or below each parameter count).
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

from tasks.peft_result import RUN_FILE, Row, read

from .output import write_bytes, write_text

STEM = "peft_bench"
COLUMNS = ("origin", "method", "key config", "trainable params", "GSM8K test acc (%)", "train time (s)",
           "peak memory (GB)", "GPU", "source")


@dataclass
class Bench:
    rows: list[Row] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [f"SKIPPED {p}" for p in self.problems]


def collect(runs: list[dict], peft_dirs: list[str | os.PathLike]) -> Bench:
    """PEFT's files (every *.json of each dir) and ours: the peft_result.json beside each completed
    task=math run's result.json (``runs``: reporting.collect's runs, with their ``_path``)."""
    missing = [str(d) for d in peft_dirs if not Path(d).is_dir()]
    if missing:
        raise FileNotFoundError(f"PEFT_RESULTS: no such directory: {', '.join(missing)}")
    bench = Bench()
    ours = [Path(r["_path"]).parent / RUN_FILE for r in runs
            if r.get("config", {}).get("task", {}).get("family") == "math"]
    for origin, paths in (("PEFT", [p for d in peft_dirs for p in sorted(Path(d).glob("*.json"))]),
                          ("ours", ours)):
        for path in paths:
            try:
                bench.rows.append(read(path, origin))
            except ValueError as error:
                bench.problems.append(str(error))
    bench.rows.sort(key=lambda r: (-(r.accuracy if r.accuracy is not None else -1), r.trainable))
    return bench


def _cells(row: Row) -> list[str]:
    def num(value: float | None, fmt: str) -> str:
        return "—" if value is None else format(value, fmt)

    setting = row.experiment.partition("/")[2].replace("llama-3.2-3B-", "")
    method = f"{row.method} ({setting})" if setting else row.method
    return [row.origin, method, row.config, f"{row.trainable:,}",
            num(None if row.accuracy is None else 100 * row.accuracy, ".2f"), num(row.train_time, ".0f"),
            num(None if row.peak_memory is None else row.peak_memory / 1e9, ".1f"), row.gpu, row.source]


def to_markdown(bench: Bench) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in bench.rows]
    notes = ["", "Peak memory: PEFT's accelerator_memory_max, the most GPU memory the caching allocator held "
             "over the run (training and generation), in GB (1e9 bytes). Train time excludes evaluation. "
             "CapaBoost's trainable params: the entries some mask keeps (the stored tensors are larger)."]
    return "\n".join(lines + notes) + "\n"


def to_csv(bench: Bench) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["origin", "method", "key_config", "trainable_params", "test_accuracy", "train_time_s",
                     "peak_memory_bytes", "gpu", "source"])
    for r in bench.rows:
        writer.writerow([r.origin, r.method, r.config, r.trainable, r.accuracy, r.train_time, r.peak_memory,
                         r.gpu, r.source])
    return buf.getvalue()


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats with at most as many parameters and at least the accuracy."""
    front, best = [], float("-inf")
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def plot(bench: Bench, dpi: int = 100) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in bench.rows if r.accuracy is not None and r.trainable > 0]
    fig, ax = plt.subplots(figsize=(8, 5))
    for origin, style in (("PEFT", {"marker": "o", "color": "0.55", "label": "PEFT, published (L40S)"}),
                          ("ours", {"marker": "*", "color": "tab:red", "s": 140, "label": "this suite"})):
        mine = [r for r in rows if r.origin == origin]
        if mine:
            ax.scatter([r.trainable for r in mine], [100 * r.accuracy for r in mine], zorder=3, **style)
            for r in mine:
                ax.annotate(f"{r.method} {r.config.split(',')[0]}", (r.trainable, 100 * r.accuracy),
                            fontsize=6, xytext=(3, 3), textcoords="offset points")
    front = pareto([(r.trainable, 100 * r.accuracy) for r in rows])
    if front:
        ax.step([x for x, _ in front], [y for _, y in front], where="post", color="tab:blue", lw=1,
                label="Pareto front", zorder=2)
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel("GSM8K test accuracy (%)")
    ax.set_title("MetaMathQA → GSM8K, Llama-3.2-3B (PEFT's benchmark)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def write(bench: Bench, out: Path, figures: bool = True) -> list[Path]:
    """results/tables/peft_bench.{md,csv} and results/figures/peft_bench.{png,csv}."""
    paths = []
    for ext, text in (("md", to_markdown(bench)), ("csv", to_csv(bench))):
        path = out / "tables" / f"{STEM}.{ext}"
        write_text(path, text)
        paths.append(path)
    if figures and any(r.accuracy is not None for r in bench.rows):
        png, points = out / "figures" / f"{STEM}.png", out / "figures" / f"{STEM}.csv"
        write_bytes(png, plot(bench))
        write_text(points, to_csv(bench))
        paths += [png, points]
    bench.written = paths
    return paths
