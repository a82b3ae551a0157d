"""Synthetic result.json files shaped like the runner's: the one builder the tables tests, the tables
benchmark (benchmarks/tables_bench.py) and the README's example figures use.

Built through tasks.result.build (every key the runner writes, so the reader accepts them), with the
identity from tasks.config.identity itself. A run belongs to its family's main sweep unless ``sweeps``
says otherwise (``[]``: launched alone).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tasks.config.schema import TrainerConf

GLUE_METRICS = {"glue/cola": ["mcc"], "glue/sst2": ["accuracy"], "glue/mrpc": ["accuracy", "f1"],
                "glue/qqp": ["accuracy", "f1"], "glue/stsb": ["pearson", "spearman"],
                "glue/mnli": ["accuracy", "accuracy_mismatched"], "glue/qnli": ["accuracy"],
                "glue/rte": ["accuracy"]}
# A per-task recipe, as conf/recipe/ has: the lr and epochs differ between tasks.
RECIPE_LR = {"glue/sst2": 1e-4}
RECIPE_EPOCHS = {"glue/cola": 40, "glue/sst2": 20, "glue/rte": 30}
PRECISION = TrainerConf.precision  # a run left at the default records it, as the runner does


def recipe(task: str) -> dict[str, dict[str, Any]]:
    common = {"lr": RECIPE_LR.get(task, 5e-4), "epochs": RECIPE_EPOCHS.get(task, 20), "batch_size": 128,
              "max_seq_length": 128, "warmup_ratio": 0.1, "weight_decay": 0.1}
    return {"lora": {**common, "r": 8, "alpha": 16}, "padapter": {**common, "reduction_factor": 12},
            "prefix": {**common, "prefix_length": 64, "prefix_hidden": 512}}


def fake_result(task: str, peft: str, seed: int, metrics: dict[str, float], *, model: str = "roberta-base",
                source: str = "hub", r: int | None = None, d: int = 2, density: float = 0.5,
                mask: str = "random", train_limit: int | None = None, dropout: float = 0.0,
                params: dict[str, int] | None = None, status: str = "completed", best: bool = True,
                sweeps: list[str] | None = None, rank: float | None = None,
                rule: str = "best_select_epoch", epochs: int = 0, mask_seed: int = 0,
                alpha: float | None = None) -> dict[str, Any]:
    """One result.json. `metrics` are the best epoch's (fractions); the final epoch is 0.01 lower.
    r=None: the recipe's rank (8). best=False: a result without a best epoch. sweeps=None: the family's
    main sweep (reporting/layouts.yaml)."""
    from reporting.layout import layouts
    from tasks import result as schema
    from tasks.config import identity as ident_lib

    capa = peft.startswith("capaboost")
    method = peft.removeprefix("capaboost_")
    rec = recipe(task)
    hparams = {**rec[method], **({"r": r} if r is not None and method == "lora" else {}),
               **({"alpha": alpha} if alpha is not None and method == "lora" else {})}
    final = {k: round(v - 0.01, 6) for k, v in metrics.items()}
    main = next(iter(metrics))
    family, dataset = task.split("/", 1)
    if sweeps is None:
        sweeps = list(layouts()[family].sweeps[:1]) if family in layouts() else []
    # the identity, as tasks.config.runspec.resolve records it, through the same function
    full = {**recipe(task)["lora"], **rec["padapter"], **rec["prefix"], **hparams}
    full.update(max_steps=None, precision=PRECISION, max_grad_norm=1.0, lr_scheduler="linear")
    cb = {"method": method, "d": d if capa else 1, "density": density if capa else 1.0,
          "mask": mask if capa else "random", "mask_seed": mask_seed, "r": full["r"],
          "alpha": full["alpha"], "dropout": dropout, "init": "peft",
          "reduction_factor": full["reduction_factor"], "prefix_length": full["prefix_length"],
          "prefix_hidden": full["prefix_hidden"], "target_modules": None}
    config = {"task": {"name": task, "family": family, "dataset": dataset, "protocol": "split",
                       "main_metric": main},
              "model": {"name": model, "kind": "hf", "hub_id": model, "path": None},
              "data": {"source": source, "path": None, "split_seed": 42, "hub_id": None,
                       "train_limit": train_limit, "eval_limit": None},
              "trainer": {"max_steps": None, "precision": PRECISION, "max_grad_norm": 1.0,
                          "lr_scheduler": "linear"}, "seed": seed}
    identity = ident_lib.identity(config, peft, cb, full, ())
    return schema.build(
        task=task, model=model, peft=peft, method=method, capaboost=capa, d=d if capa else 1,
        density=density if capa else 1.0, mask=mask, seed=seed, mask_seed=mask_seed, metrics=final,
        best=dict(metrics) if best else None, best_epoch=max(epochs, 1) if best else None,
        epochs_evaluated=max(epochs, 1),
        selection={"metric": main, "value": 0.8, "split": "select", "rule": rule},
        main_metric=main, params=params or {"trainable": 100, "effective": 75, "total": 1100}, status=status,
        runtime_s=1.0, resumed_from=None, global_step=0, git_sha="x", versions={},
        config={"data": {"source": source, "train_limit": train_limit},
                "peft": {"name": peft, "r": r, "dropout": dropout},
                "trainer": {"max_steps": None, "progress": False},
                "recipe": {m: {**full, **rec[m]} for m in rec}},
        hparams=hparams, protocol="split", group=ident_lib.group(identity), identity=identity,
        identity_key=ident_lib.identity_key(identity), sweeps=list(sweeps), mask_digest=None,
        rank={"min": rank, "mean": rank, "max": rank, "bound": (d if capa else 1) * (r or 8)}
        if rank is not None else None,
        world_size=1, per_device_batch_size=128, grad_accum=1, run_dir="runs/fake",
        history=[{"epoch": e, "select": metrics, "report": metrics} for e in range(1, epochs + 1)],
        device="cpu", precision=PRECISION, cuda_visible_devices=None, torch_build="2", torch_cuda=None,
        nvidia_driver=None, data_digest=None)


def put(root: Path, name: str, data: dict[str, Any] | str) -> Path:
    """Write <root>/<name>/result.json (a str is written as is: corrupt files)."""
    from tasks.result import RESULT

    path = Path(root) / name / RESULT
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path
