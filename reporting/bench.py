"""Benchmark `make tables` on N generated result.json files (not a test; prints the time).

    python -m reporting.bench [--n 1000] [--keep DIR]

Files look like the runner's (resolved config, hparams, a 20-epoch history) and spread over the
paper's tables and figures, so grouping, rendering and plotting all do real work.
"""
from __future__ import annotations

import argparse
import itertools
import json
import random
import tempfile
import time
from pathlib import Path

from .report import make_tables

GLUE = {"cola": ["mcc"], "sst2": ["accuracy"], "mrpc": ["accuracy", "f1"], "qqp": ["accuracy", "f1"],
        "stsb": ["pearson", "spearman"], "mnli": ["accuracy", "accuracy_mismatched"], "qnli": ["accuracy"],
        "rte": ["accuracy"]}


def fake_result(task: str, peft: str, seed: int, r: int, d: int, rng: random.Random) -> dict:
    capa = peft.startswith("capaboost")
    metrics = {m: round(rng.uniform(0.55, 0.95), 4) for m in GLUE[task]}
    return {
        "task": f"glue/{task}", "model": "roberta-base", "peft": peft,
        "method": peft.removeprefix("capaboost_"),
        "capaboost": capa, "d": d if capa else 1, "density": 0.5 if capa else 1.0, "mask": "random",
        "seed": seed, "mask_seed": 0, "metrics": metrics, "best": metrics, "best_epoch": 7,
        "selection": {"metric": GLUE[task][0], "value": 0.8}, "main_metric": GLUE[task][0],
        "params": {"trainable": 300_000 * r // 8, "effective": 225_000 * r // 8, "total": 125_000_000},
        "status": "completed", "runtime_s": 100.0, "git_sha": "bench", "versions": {"torch": "x"},
        "hparams": {"r": r, "alpha": 16, "lr": 5e-4},
        "config": {"data": {"source": "hub", "path": None, "split_seed": 42, "train_limit": None},
                   "peft": {"name": peft, "r": r, "dropout": 0.0, "init": "peft"},
                   "trainer": {"max_steps": None, "grad_accum": 1, "precision": "fp32"},
                   "model": {"name": "roberta-base", "kind": "hf"}, "task": {"protocol": "split"}},
        "history": [{"epoch": e, "select": metrics, "report": metrics} for e in range(1, 21)],
    }


def generate(root: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    grid = itertools.cycle(itertools.product(["lora", "capaboost_lora", "padapter", "capaboost_padapter"],
                                             (4, 8, 16, 32), (2, 4), GLUE, (42, 43, 44)))
    for i in range(n):
        peft, r, d, task, s = next(grid)
        path = root / f"run{i:05d}" / "result.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(fake_result(task, peft, s, r, d, rng)))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--keep", help="write the runs and outputs here instead of a temporary directory")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        generate(root / "runs", args.n)
        t0, c0 = time.perf_counter(), time.process_time()
        report = make_tables([root / "runs"], root / "out")
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
    print(f"make_tables on {report.collection.n_files} result files: {dt:.2f} s wall, {dc:.2f} s CPU "
          f"({len(report.tables)} table files, {len(report.figures)} figures; matplotlib import included)")


if __name__ == "__main__":
    main()
