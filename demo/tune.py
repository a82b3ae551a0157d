"""Choose each demo arm's learning rate from the tuning sweep (sweeps/demo_tune.yaml), on the select split.

Each run's result.json holds ``selection.value``: its best epoch's score on the SELECT half of the dev
words (the report half is never looked at). Per arm, the lr with the highest mean over seeds wins
(ties: the smaller lr); ``--write`` puts it into ``sweeps/demo_arm/<arm>.yaml``, where
sweeps/demo.yaml reads it. Every (arm, lr) cell must have the same seeds, or the means would not compare.

    python -m demo.tune results/demo/tune/runs [--write]
"""
from __future__ import annotations

import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from reporting.collect import load_runs
from reporting.groups import lookup
from tasks.config.sweeps import params_of
from tasks.files import write_text

ARMS_DIR = Path(__file__).resolve().parents[1] / "sweeps" / "demo_arm"
LR_LINE = re.compile(r"^trainer: \{lr: [^}]*\}", re.MULTILINE)


def arm_of(run: dict[str, Any]) -> str:
    """The arm's config name in sweeps/demo_arm/: lora_r3, capaboost_r4_d2, ..."""
    r = lookup(run, ("config.peft.r", "hparams.r"))
    return f"lora_r{r}" if run["peft"] == "lora" else f"{run['peft'].removesuffix('_lora')}_r{r}_d{run['d']}"


Cells = dict[str, dict[float, dict[int, float]]]  # {arm: {lr: {seed: selection value}}}


def grid(runs: list[dict[str, Any]], sweep: str | None = "demo_tune") -> Cells:
    """{arm: {lr: {seed: selection value}}}, over the sweep file's lrs and seeds only (runs of an
    earlier grid may still lie in runs_root); ``sweep=None`` takes every run."""
    keep = None
    if sweep:
        params = params_of(sweep)
        keep = ({float(x) for x in params["trainer.lr"].split(",")},
                {int(x) for x in params["seed"].split(",")})
    out: Cells = defaultdict(lambda: defaultdict(dict))
    for run in runs:
        lr = float(run["hparams"]["lr"])
        if keep is None or (lr in keep[0] and run["seed"] in keep[1]):
            out[arm_of(run)][lr][run["seed"]] = float(run["selection"]["value"])
    return out


def choose(cells: Cells) -> dict[str, float]:
    chosen = {}
    for arm, by_lr in sorted(cells.items()):
        seeds = {lr: set(s) for lr, s in by_lr.items()}
        if len(set(map(frozenset, seeds.values()))) != 1:
            raise ValueError(f"{arm}: the lrs have different seeds {seeds}: finish the tuning sweep first")
        chosen[arm] = max(sorted(by_lr), key=lambda lr: statistics.fmean(by_lr[lr].values()))
    return chosen


def write(chosen: dict[str, float], arms_dir: Path = ARMS_DIR) -> list[Path]:
    paths = []
    for arm, lr in chosen.items():
        path = arms_dir / f"{arm}.yaml"
        text = path.read_text(encoding="utf-8")
        if not LR_LINE.search(text):
            raise ValueError(f"{path}: no 'trainer: {{lr: ...}}' line to write the chosen lr into")
        write_text(path, LR_LINE.sub(f"trainer: {{lr: {lr:.1e}}}", text, count=1))
        paths.append(path)
    return paths


def report(cells: Cells, chosen: dict[str, float]) -> str:
    lrs = sorted({lr for by_lr in cells.values() for lr in by_lr})
    lines = ["| arm | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " | chosen |",
             "|---|" + "---|" * (len(lrs) + 1)]
    for arm, by_lr in sorted(cells.items()):
        vals = [f"{100 * statistics.fmean(by_lr[lr].values()):.2f} (n={len(by_lr[lr])})" if lr in by_lr
                else "—" for lr in lrs]
        lines.append(f"| {arm} | " + " | ".join(vals) + f" | {chosen[arm]:g} |")
    edge = sorted(arm for arm, lr in chosen.items() if lr in (min(cells[arm]), max(cells[arm])))
    note = (f"\nAt the edge of the grid, so the best lr may lie outside it: {', '.join(edge)}. "
            "Extend trainer.lr in sweeps/demo_tune.yaml and rerun.\n") if edge else ""
    return "Selection score x100 (mean over seeds, select split):\n\n" + "\n".join(lines) + "\n" + note


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, help="the tuning sweep's runs_root")
    ap.add_argument("--write", action="store_true", help="write the choice into sweeps/demo_arm/*.yaml")
    args = ap.parse_args(argv)
    try:
        cells = grid(load_runs([args.runs]).runs)
        if not cells:
            raise ValueError(f"no completed runs under {args.runs}")
        chosen = choose(cells)
    except (FileNotFoundError, ValueError) as err:
        print(f"demo.tune: {err}", file=sys.stderr)
        return 2
    print(report(cells, chosen))
    for path in write(chosen) if args.write else []:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
