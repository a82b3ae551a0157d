"""Time `make tables` on N synthetic result.json files (not a test; prints the time).

    .venv/bin/python benchmarks/tables_bench.py [--n 1000] [--keep DIR]

The files look like the runner's (identity, sweeps, resolved config, a 20-epoch history) and
follow the paper's sweeps (main GLUE table, Fig. 1/3/4 grids, VTAB), so grouping, rendering and
plotting all do real work.
"""
from __future__ import annotations

import argparse
import itertools
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fake_results import GLUE_METRICS, fake_result, put  # noqa: E402
from reporting import make_tables  # noqa: E402
from reporting.layout import layouts  # noqa: E402

SEEDS = (42, 43, 44)


def paper_grid() -> Iterator[dict[str, Any]]:
    """Keyword arguments of fake_result for the paper's sweeps, in sweep order."""
    for peft, task, seed in itertools.product(["lora", "capaboost_lora", "padapter", "capaboost_padapter",
                                               "prefix", "capaboost_prefix"], GLUE_METRICS, SEEDS):
        yield {"task": task, "peft": peft, "seed": seed, "sweeps": ["glue_roberta_base"]}
    arms = [("lora", 1), ("capaboost_lora", 2), ("capaboost_lora", 4)]
    for (peft, d), r, task, seed in itertools.product(arms, (4, 8, 16, 32), GLUE_METRICS, SEEDS):
        yield {"task": task, "peft": peft, "d": d, "r": r, "seed": seed, "sweeps": ["fig1_rank_params"]}
    arms = [("lora", 1), ("capaboost_lora", 2), ("capaboost_lora", 3), ("capaboost_lora", 4)]
    for (peft, d), r, task, seed in itertools.product(arms, (2, 4, 8, 16), ["glue/cola", "glue/mrpc",
                                                                          "glue/stsb", "glue/rte"], SEEDS):
        yield {"task": task, "peft": peft, "d": d, "r": r, "seed": seed, "sweeps": ["fig4_r_by_d"]}
    for task, mask, density, seed in itertools.product(["glue/cola", "glue/sst2"], ["random", "same", "none"],
                                                       (0.1, 0.3, 0.5, 0.7, 0.9), SEEDS):
        yield {"task": task, "peft": "capaboost_lora", "mask": mask, "density": density, "seed": seed,
               "train_limit": 10000, "dropout": 0.1, "sweeps": ["fig3_masks"]}
    for col, peft, seed in itertools.product(layouts()["vtab"].columns, ["lora", "capaboost_lora"], SEEDS):
        yield {"task": col.task, "peft": peft, "seed": seed, "model": "vit-b16", "sweeps": ["vtab"]}


BASE = {"glue/cola": 0.62, "glue/sst2": 0.94, "glue/mrpc": 0.88, "glue/qqp": 0.87, "glue/stsb": 0.90,
        "glue/mnli": 0.86, "glue/qnli": 0.92, "glue/rte": 0.72}
LORA_PER_RANK = 2 * 12 * 2 * 768  # q and v of 12 layers, A and B: parameters per unit of r (RoBERTa-base)
BACKBONE = 124_645_632


def _score(kw: dict[str, Any], rng: random.Random) -> float:
    """A plausible score: a little better with r and d, worse with sparser or shared masks."""
    import math

    d = kw.get("d", 2) if kw["peft"].startswith("capaboost") else 1
    density = kw.get("density", 0.5) if d > 1 else 1.0
    gain = 0.004 * math.log2(kw.get("r", 8)) + 0.006 * (d - 1)
    gain -= {"random": 0.0, "same": 0.015, "none": 0.025}[kw.get("mask", "random")] * (1 - density) * 2
    return min(0.99, max(0.05, BASE.get(kw["task"], 0.75) + gain + rng.gauss(0, 0.008)))


def generate(root: Path, n: int, seed: int = 0) -> None:
    """n result files: the paper grid, repeated with new seeds if n is larger."""
    rng = random.Random(seed)
    grid = list(paper_grid())
    for i in range(n):
        kw = dict(grid[i % len(grid)])
        kw["seed"] += 100 * (i // len(grid))
        score = _score(kw, rng)
        metrics = {m: round(min(0.99, score + rng.gauss(0, 0.004)), 4)
                   for m in GLUE_METRICS.get(kw["task"], ["accuracy"])}
        capa = kw["peft"].startswith("capaboost")
        d, r = (kw.get("d", 2) if capa else 1), kw.get("r", 8)
        kept = 1 - (1 - kw.get("density", 0.5)) ** d if capa else 1.0
        peft = int(LORA_PER_RANK * r * kept)
        rank = float(min(d * r, 768)) if "lora" in kw["peft"] else None
        head = 592_130  # RoBERTa-base classification head
        params = {"trainable": peft + head, "effective": peft + head, "peft": peft,
                  "total": BACKBONE + peft + head}
        put(root, f"run{i:05d}", fake_result(metrics=metrics, epochs=20, rank=rank,
                                              params=params, **kw))


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--keep", help="write the runs and outputs here instead of a temporary directory")
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error("--n must be at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        generate(root / "runs", args.n)
        t0, c0 = time.perf_counter(), time.process_time()
        report = make_tables([root / "runs"], root / "out")
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
    print(f"make_tables on {report.collection.n_files} result files: {dt:.2f} s wall, {dc:.2f} s CPU "
          f"({len(report.tables)} table files, {len(report.figures)} figures; matplotlib import included)")
    return {"files": report.collection.n_files, "wall_s": dt, "cpu_s": dc, "tables": len(report.tables),
            "figures": len(report.figures)}


if __name__ == "__main__":
    main()
