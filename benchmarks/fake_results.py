"""Synthetic result.json files shaped like the runner's: the one builder the tables tests, the tables
benchmark (benchmarks/tables_bench.py) and the README's example figures use.

`identity=True` writes the fields the runner records today (`identity`, `identity_key`, `sweeps`);
`identity=False` writes a file as older runners did (tables must keep reading those).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

GLUE_METRICS = {"glue/cola": ["mcc"], "glue/sst2": ["accuracy"], "glue/mrpc": ["accuracy", "f1"],
                "glue/qqp": ["accuracy", "f1"], "glue/stsb": ["pearson", "spearman"],
                "glue/mnli": ["accuracy", "accuracy_mismatched"], "glue/qnli": ["accuracy"],
                "glue/rte": ["accuracy"]}
# A per-task recipe, as conf/recipe/ has: the lr and epochs differ between tasks.
RECIPE_LR = {"glue/sst2": 1e-4}
RECIPE_EPOCHS = {"glue/cola": 40, "glue/sst2": 20, "glue/rte": 30}


def recipe(task: str) -> dict[str, dict[str, Any]]:
    common = {"lr": RECIPE_LR.get(task, 5e-4), "epochs": RECIPE_EPOCHS.get(task, 20), "batch_size": 128,
              "max_seq_length": 128, "warmup_ratio": 0.1, "weight_decay": 0.1}
    return {"lora": {**common, "r": 8, "alpha": 16}, "padapter": {**common, "reduction_factor": 12},
            "prefix": {**common, "prefix_length": 64, "prefix_hidden": 512}}


def fake_result(task: str, peft: str, seed: int, metrics: dict[str, float], *, model: str = "roberta-base",
                source: str = "hub", r: int | None = None, d: int = 2, density: float = 0.5,
                mask: str = "random", train_limit: int | None = None, dropout: float = 0.0,
                params: dict[str, int] | None = None, status: str = "completed", best: bool = True,
                identity: bool = False, sweeps: list[str] | None = None, rank: float | None = None,
                rule: str | None = None, epochs: int = 0, mask_seed: int = 0) -> dict[str, Any]:
    """One result.json. `metrics` are the best epoch's (fractions); the final epoch is 0.01 lower.
    r=None: the recipe's rank (8). best=False: an old/partial file without a best epoch."""
    capa = peft.startswith("capaboost")
    method = peft.removeprefix("capaboost_")
    rec = recipe(task)
    hparams = {**rec[method], **({"r": r} if r is not None and method == "lora" else {})}
    final = {k: round(v - 0.01, 6) for k, v in metrics.items()}
    out: dict[str, Any] = {
        "task": task, "model": model, "peft": peft, "method": method, "capaboost": capa,
        "d": d if capa else 1, "density": density if capa else 1.0, "mask": mask, "seed": seed,
        "mask_seed": mask_seed, "metrics": final, "main_metric": next(iter(metrics)),
        "selection": {"metric": next(iter(metrics)), "value": 0.8, "split": "select"},
        "params": params or {"trainable": 100, "effective": 75, "total": 1100}, "status": status,
        "runtime_s": 1.0, "git_sha": "x", "versions": {}, "hparams": hparams,
        "config": {"data": {"source": source, "train_limit": train_limit},
                   "peft": {"name": peft, "r": r, "dropout": dropout},
                   "trainer": {"max_steps": None, "progress": False}, "recipe": rec},
    }
    if best:
        out["best"] = dict(metrics)
        out["best_epoch"] = max(epochs, 1)
    if rule is not None:
        out["selection"]["rule"] = rule
    if rank is not None:
        out["rank"] = {"min": rank, "mean": rank, "max": rank, "bound": (d if capa else 1) * (r or 8)}
    if epochs:
        out["history"] = [{"epoch": e, "select": metrics, "report": metrics} for e in range(1, epochs + 1)]
    if identity:
        ident = {"task": task, "model": model, "peft": peft, "method": method, "capaboost": capa,
                 "d": d if capa else 1, "density": density if capa else 1.0, "mask": mask,
                 "mask_seed": mask_seed, "protocol": "split",
                 "data": {"source": source, "train_limit": train_limit, "eval_limit": None},
                 "hparams": {k: v for k, v in hparams.items()},
                 "peft_options": {"dropout": dropout, "init": "peft", "target_modules": None}}
        out["identity"] = ident
        out["identity_key"] = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
    if sweeps is not None:
        out["sweeps"] = list(sweeps)
    return out


def put(root: Path, name: str, data: dict[str, Any] | str) -> Path:
    """Write <root>/<name>/result.json (a str is written as is: corrupt files)."""
    path = Path(root) / name / "result.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path
