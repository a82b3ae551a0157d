"""The demo's question in one table: does CapaBoost beat LoRA at the same effective parameter count?

``make_tables`` lays the runs out as the paper's GLUE table; this reads the same result.json files
and puts each CapaBoost arm next to the LoRA arm of equal size, with the seed spread beside the gap,
so a difference smaller than the noise is called what it is.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from capaboost.atomic import write_text

# (CapaBoost arm, LoRA arm of the same or larger effective size): arms are (peft, r, d)
PAIRS = ((("capaboost_lora", 8, 2), ("lora", 6, 1)), (("capaboost_lora", 8, 4), ("lora", 8, 1)))


def _arm(result: dict[str, Any]) -> tuple[str, int, int]:
    r = (result.get("hparams") or {}).get("r") or result["config"]["peft"]["r"]
    return result["peft"], int(r), int(result["d"])


def _name(arm: tuple[str, int, int]) -> str:
    peft, r, d = arm
    return f"LoRA r={r}" if peft == "lora" else f"CapaBoost r={r} d={d}"


def collect(runs_root: Path | str) -> dict[tuple[str, tuple[str, int, int]], list[dict[str, Any]]]:
    groups: dict[tuple[str, tuple[str, int, int]], list[dict[str, Any]]] = {}
    for path in sorted(Path(runs_root).rglob("result.json")):
        try:
            result = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # make_tables reports unreadable files by path
        if result.get("status") == "completed":
            groups.setdefault((result["task"], _arm(result)), []).append(result)
    return groups


def _stat(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(runs_root: Path | str) -> str:
    """Markdown: every arm per task (mean +- std, x100), then the matched pairs with a verdict."""
    groups = collect(runs_root)
    if not groups:
        return "no completed runs\n"
    tasks = sorted({task for task, _ in groups})
    arms = sorted({arm for _, arm in groups}, key=lambda a: (a[0] != "lora", a[1], a[2]))
    lines = [f"| arm | effective params ({tasks[0]}) | " + " | ".join(tasks) + " |",
             "|---|---|" + "---|" * len(tasks)]
    for arm in arms:
        cells, params = [], ""
        for task in tasks:
            runs = groups.get((task, arm), [])
            if not runs:
                cells.append("—")
                continue
            main = runs[0]["main_metric"]
            m, s = _stat([100 * r["best"][main] for r in runs])
            cells.append(f"{main} {m:.2f} ± {s:.2f} (n={len(runs)})")
            params = params or f"{runs[0]['params']['effective']:,}"  # first task's (heads differ)
        lines.append(f"| {_name(arm)} | {params} | " + " | ".join(cells) + " |")
    lines += ["", "Matched effective parameters (gap = CapaBoost - LoRA, x100; noise = larger seed std):", ""]
    for capa, lora in PAIRS:
        for task in tasks:
            a, b = groups.get((task, capa), []), groups.get((task, lora), [])
            if not a or not b:
                continue
            main = a[0]["main_metric"]
            (ma, sa), (mb, sb) = (_stat([100 * r["best"][main] for r in runs]) for runs in (a, b))
            gap, noise = ma - mb, max(sa, sb)
            verdict = ("one seed: no verdict" if min(len(a), len(b)) < 2 else "CapaBoost better"
                       if gap > noise else "LoRA better" if -gap > noise else "within seed noise")
            lines.append(f"- {task}: {_name(capa)} ({a[0]['params']['effective']:,} params) {ma:.2f} vs "
                         f"{_name(lora)} ({b[0]['params']['effective']:,}) {mb:.2f}: gap {gap:+.2f}, "
                         f"noise {noise:.2f} -> {verdict}")
    return "\n".join(lines) + "\n"


def write(runs_root: Path | str, out: Path) -> str:
    text = "# Demo: LoRA vs CapaBoost-LoRA on AFINN-165 (MiniLM-L6, best epoch, report split)\n\n" \
        + summarize(runs_root)
    write_text(out, text)
    return text
