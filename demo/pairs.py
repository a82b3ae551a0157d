"""The demo's verdict: each CapaBoost arm against the LoRA arm of (nearly) equal PEFT parameters.

The comparison is paired by seed (same seed = same data order and head init for both arms), so the
interval is that of the per-seed difference, not of either arm's spread: mean difference +- the 95%
Student-t half-width ``t(0.975, n-1) * sd / sqrt(n)``. Verdict: "CapaBoost better" when the whole
interval is above 0, "LoRA better" when it is below, else "within noise".
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capaboost.atomic import write_text
from reporting.collect import load_runs
from reporting.groups import lookup

METRICS = ("pearson", "spearman")


def arm_of(run: dict[str, Any]) -> str:
    """The arm's config name in sweeps/demo_arm/: lora_r3, capaboost_r4_d2, ..."""
    r = lookup(run, ("config.peft.r", "hparams.r"))
    return f"lora_r{r}" if run["peft"] == "lora" else f"{run['peft'].removesuffix('_lora')}_r{r}_d{run['d']}"


@dataclass
class Arm:
    name: str
    peft: str
    params: int  # PEFT weights some mask keeps, head excluded (count_parameters()["peft"])
    lr: float
    scores: dict[int, dict[str, float]] = field(default_factory=dict)  # seed -> best metrics (report split)

    def values(self, metric: str) -> list[float]:
        return [100 * s[metric] for _, s in sorted(self.scores.items())]


def collect(runs: list[dict[str, Any]], task: str) -> dict[str, Arm]:
    arms: dict[str, Arm] = {}
    for run in runs:
        if run["task"] != task:
            continue
        name = arm_of(run)
        size = peft_params(run)
        arm = arms.setdefault(name, Arm(name, run["peft"], size, run["hparams"]["lr"]))
        if (size, run["hparams"]["lr"]) != (arm.params, arm.lr):
            raise ValueError(f"{name}: runs with different sizes or lrs under one arm ({run['_path']})")
        arm.scores[run["seed"]] = run["best"]
    return arms


def peft_params(run: dict[str, Any]) -> int:
    """The PEFT-only count; files without it (older runs) fall back to ``effective`` (head included)."""
    return run["params"].get("peft", run["params"]["effective"])


def matches(arms: dict[str, Arm]) -> list[tuple[Arm, Arm]]:
    """Each CapaBoost arm with the LoRA arm nearest in PEFT parameters."""
    loras = [a for a in arms.values() if a.peft == "lora"]
    return [(a, min(loras, key=lambda b: abs(b.params - a.params)))
            for a in sorted(arms.values(), key=lambda a: a.params) if a.peft != "lora" and loras]


def paired(a: Arm, b: Arm, metric: str, level: float = 0.95) -> dict[str, Any]:
    """Mean and t-interval of a - b over the seeds both arms have (x100)."""
    from scipy import stats

    seeds = sorted(set(a.scores) & set(b.scores))
    diffs = [100 * (a.scores[s][metric] - b.scores[s][metric]) for s in seeds]
    n = len(diffs)
    if n < 2:
        return {"n": n, "mean": diffs[0] if diffs else math.nan, "lo": math.nan, "hi": math.nan,
                "verdict": "one seed: no interval"}
    mean = statistics.fmean(diffs)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * statistics.stdev(diffs) / math.sqrt(n)
    verdict = "CapaBoost better" if mean - half > 0 else "LoRA better" if mean + half < 0 else "within noise"
    return {"n": n, "mean": mean, "lo": mean - half, "hi": mean + half, "verdict": verdict}


def _ms(values: list[float]) -> str:
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.2f}"


def summarize(runs_root: Path | str) -> str:
    """Markdown: every arm (mean ± seed std, x100, best epoch on the report split), then the pairs."""
    runs = load_runs([runs_root]).runs
    lines = []
    for task in sorted({r["task"] for r in runs}):
        arms = collect(runs, task)
        lines += [f"## {task}", "", "| arm | PEFT params | lr | seeds | " + " | ".join(METRICS) + " |",
                  "|---|---|---|---|" + "---|" * len(METRICS)]
        for arm in sorted(arms.values(), key=lambda a: (a.params, a.peft != "lora")):
            lines.append(f"| {arm.name} | {arm.params:,} | {arm.lr:g} | {len(arm.scores)} | "
                         + " | ".join(_ms(arm.values(m)) for m in METRICS) + " |")
        lines += ["", "Paired by seed, CapaBoost − LoRA (x100), 95% t-interval:", "",
                  "| CapaBoost | LoRA | metric | difference | 95% CI | n | verdict |",
                  "|---|---|---|---|---|---|---|"]
        for a, b in matches(arms):
            for metric in METRICS:
                p = paired(a, b, metric)
                lines.append(f"| {a.name} ({a.params:,}) | {b.name} ({b.params:,}) | {metric} | "
                             f"{p['mean']:+.2f} | [{p['lo']:+.2f}, {p['hi']:+.2f}] | {p['n']} | "
                             f"{p['verdict']} |")
        lines.append("")
    return "\n".join(lines) if lines else "no completed runs\n"


def write(runs_root: Path | str, out: Path) -> str:
    text = ("# Demo: LoRA vs CapaBoost-LoRA on the AFINN-165 valence (MiniLM-L6)\n\n"
            + summarize(runs_root))
    write_text(out, text)
    return text
