"""One run on the stock ``transformers.Trainer``: PEFT, arguments, resume, result.json.

The Trainer is used as shipped; everything CapaBoost-specific sits in small pieces it already supports:
a model wrapper whose ``state_dict`` holds only the trainable tensors (so checkpoints are the PEFT
weights, head and optimizer state, and ``resume_from_checkpoint`` reloads them onto the rebuilt frozen
backbone), a callback that evaluates every split at each epoch end (``tasks.evaluation``), and the
Trainer's own AdamW parameter groups (no decay on biases and LayerNorm weights).
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed

import capaboost
from capaboost.atomic import write_text
from tasks import datacheck, device, distributed, divergence, evaluation, lifecycle, runlock
from tasks.checkpoints import CHECKPOINTS, CompleteCheckpoints, newest_marked, resume_point
from tasks.config import RunSpec
from tasks.evaluation import EpochEvaluation, EvalSplit, epoch_history, report_metrics
from tasks.provenance import WandbStep, git_sha, run_name, start_wandb, versions

RESULT = "result.json"
WEIGHTS = "peft.safetensors"


@dataclass
class Job:
    """What a task family (tasks/glue.py, squad.py, vtab.py) hands the common runner."""
    model: nn.Module                   # backbone + task head, no PEFT yet
    train: Any
    evals: dict[str, EvalSplit]        # "report", "select" (unless aliased), "report_<suffix>" extras
    collator: Callable
    label_names: list[str]
    select_score: Callable[[dict[str, float]], float]
    selection_metric: str
    aliases: dict[str, str] = field(default_factory=dict)   # {"select": "report"}: same data, eval once


# --- model ----------------------------------------------------------------------------------------------

class TrainerModel(nn.Module):
    """What the Trainer sees: forwards to ``model``; its state_dict holds only trainable tensors.

    The Trainer saves ``state_dict()`` of a non-PreTrainedModel to ``model.safetensors`` and reloads it
    with ``strict=False``; the frozen backbone is rebuilt identically (pretrained or seeded) on resume.
    """

    accepts_loss_kwargs = False  # forward takes **inputs; the Trainer must not add num_items_in_batch

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.register_state_dict_post_hook(_keep_trainable)
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        # Read by Trainer._issue_warnings_after_load: these keys are absent from checkpoints on purpose.
        self._keys_to_ignore_on_save = sorted(f"model.{k}" for k in model.state_dict()
                                              if f"model.{k}" not in trainable)

    def forward(self, **inputs: Any) -> Any:
        return self.model(**inputs)

    def tie_weights(self) -> None:
        """Called by the Trainer after a partial load; the wrapped model's ties never change."""


def _keep_trainable(module: nn.Module, state_dict: dict, prefix: str, local_metadata: Any) -> None:
    trainable = {prefix + n for n, p in module.named_parameters() if p.requires_grad}
    for key in [k for k in state_dict if k.startswith(prefix) and k not in trainable]:
        del state_dict[key]


def attach_peft(model: nn.Module, spec: RunSpec) -> tuple[nn.Module, nn.Module]:
    """(model with PEFT, the module capaboost.apply returned: what capaboost.save/count see)."""
    cfg = capaboost.CapaBoostConfig(**spec.capaboost_config)
    if hasattr(model, "vit"):  # tasks.models.TimmClassifier: the backbone is detected on the timm model
        model.vit = capaboost.apply(model.vit, cfg)
        return model, model.vit
    peft_root = capaboost.apply(model, cfg)  # prefix returns PEFT's wrapper: always use the return value
    return peft_root, peft_root


# --- the run --------------------------------------------------------------------------------------------

def training_args(spec: RunSpec, run_dir: Path, job: Job, info: distributed.DistInfo,
                  placement: device.Placement) -> TrainingArguments:
    hp, tr = spec.hparams, spec.config["trainer"]
    per_device = distributed.per_device_batch(hp["batch_size"], info.world_size, hp["grad_accum"])
    return TrainingArguments(
        output_dir=str(run_dir / CHECKPOINTS), num_train_epochs=hp["epochs"],
        max_steps=hp["max_steps"] or -1, per_device_train_batch_size=per_device,
        per_device_eval_batch_size=tr["eval_batch_size"] or per_device,
        gradient_accumulation_steps=hp["grad_accum"], learning_rate=hp["lr"], weight_decay=hp["weight_decay"],
        warmup_steps=hp["warmup_steps"] if hp["warmup_steps"] else hp["warmup_ratio"],  # < 1: a ratio
        lr_scheduler_type=hp["lr_scheduler"], max_grad_norm=hp["max_grad_norm"], optim="adamw_torch",
        fp16=placement.precision == "fp16", bf16=placement.precision == "bf16",
        eval_strategy="no", save_strategy="epoch", save_total_limit=None,  # rotated after the marker
        logging_strategy="steps", logging_steps=tr["logging_steps"],
        report_to=["wandb"] if spec.config["logger"]["name"] == "wandb" else "none", run_name=run_name(spec),
        seed=spec.seed, data_seed=spec.seed, remove_unused_columns=False, label_names=job.label_names,
        disable_tqdm=not tr["progress"], dataloader_num_workers=tr["num_workers"],
        use_cpu=placement.device == "cpu", dataloader_pin_memory=placement.device == "cuda",
        **distributed.trainer_overrides(info))


def execute(spec: RunSpec, callbacks: Sequence[TrainerCallback] = ()) -> dict[str, Any]:
    """Train and evaluate one resolved config; returns (and writes) the result dict.

    Idempotent: a finished run dir is a no-op unless ``force``; a run dir with checkpoints resumes.
    One trainer per run dir (a lock); signals save a checkpoint and exit (tasks.lifecycle).
    """
    start = time.time()
    run_dir = Path(spec.run_dir)
    result_path = run_dir / RESULT
    if result_path.is_file() and not spec.force:
        result = reuse_result(result_path, spec.sweep)
        print(f"already {result.get('status', 'completed')}: {result_path} (force=true re-runs it)")
        return result
    placement = device.place(spec.config["trainer"])  # DeviceError (one line) before anything is written
    info = distributed.setup(cuda=placement.device == "cuda")
    distributed.check_same("run directory (from the composed config)", spec.run_dir, info)  # [ddp]
    raw = datacheck.load(spec)  # DataError (one line) before the run directory exists
    with lifecycle.guard(run_dir, info, spec.config["trainer"]) as (status, preemption):
        if result_path.is_file() and not spec.force:  # the trainer this one waited for finished the run
            return reuse_result(result_path, spec.sweep, locked=True)
        return _train(spec, callbacks, info, preemption, status, start, placement, raw)


def _train(spec: RunSpec, callbacks: Sequence[TrainerCallback], info: distributed.DistInfo,
           preemption: lifecycle.Preemption, status: lifecycle.Status, start: float,
           placement: device.Placement, raw: Any = None) -> dict[str, Any]:
    run_dir = Path(spec.run_dir)
    result_path = run_dir / RESULT
    if spec.force and info.is_main:
        for stale in (result_path, run_dir / CHECKPOINTS, run_dir / "wandb", run_dir / "wandb_id"):
            if stale.is_dir():
                shutil.rmtree(stale)
            elif stale.exists():
                stale.unlink()
    distributed.barrier(info)  # [ddp] no rank looks for checkpoints while rank 0 is deleting them
    checkpoint = resume_point(run_dir / CHECKPOINTS) if info.is_main else None  # removes broken ones
    distributed.barrier(info)
    checkpoint = checkpoint if info.is_main else newest_marked(run_dir / CHECKPOINTS)
    distributed.check_same("checkpoint to resume from", str(checkpoint), info)
    if checkpoint:
        print(f"resuming from {checkpoint}")

    set_seed(spec.seed)
    job = importlib.import_module(f"tasks.{spec.family}").prepare(spec, raw)
    model, peft_root = attach_peft(job.model, spec)
    params = capaboost.count_parameters(model)
    digest = distributed.check_masks(peft_root, info)
    wrapped = TrainerModel(model)

    args = training_args(spec, run_dir, job, info, placement)
    use_wandb = spec.config["logger"]["name"] == "wandb" and info.is_main
    wandb_run = start_wandb(spec, run_dir, checkpoint) if use_wandb else None
    epochs = EpochEvaluation(job.evals, spec.config["task"]["eval_every"])
    complete = CompleteCheckpoints(spec.config["trainer"]["save_total_limit"], info,
                                   on_saved=lambda step: status.write("running", step=step))
    steps = [WandbStep(wandb_run)] if wandb_run else []  # before `complete`: its marker covers the step file
    trainer = Trainer(model=wrapped, args=args, train_dataset=job.train, data_collator=job.collator,
                      callbacks=[epochs, *steps, complete, preemption, divergence.Divergence(), *callbacks])
    epochs.trainer = trainer
    diverged = None
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
    except divergence.Diverged as stop:  # a finished outcome: result.json says where (tasks.divergence)
        diverged = stop

    history = epoch_history(trainer.state.log_history, list(job.evals), job.aliases)
    if not history and diverged is None:
        raise RuntimeError("training finished without a single evaluation round")
    result = {
        "task": spec.task, "model": spec.model, "peft": spec.peft, "method": spec.method,
        "capaboost": spec.capaboost, "d": spec.d, "density": spec.density, "mask": spec.mask,
        "seed": spec.seed, "mask_seed": spec.mask_seed,
        "metrics": None, "best": None, "best_epoch": None, "epochs_evaluated": len(history),
        "selection": None,
        "main_metric": spec.main_metric, "params": params, "status": "completed",
        "runtime_s": round(time.time() - start, 2), "resumed_from": checkpoint,
        "global_step": trainer.state.global_step, "git_sha": git_sha(), "versions": versions(),
        "config": spec.config, "hparams": spec.hparams, "protocol": spec.protocol, "group": spec.group,
        "identity": spec.identity, "identity_key": spec.identity_key,
        "sweeps": [spec.sweep] if spec.sweep else [],
        "mask_digest": digest, "rank": None, "world_size": info.world_size,
        "per_device_batch_size": args.per_device_train_batch_size,
        "grad_accum": args.gradient_accumulation_steps,
        "run_dir": str(run_dir), "history": divergence.finite_or_none(history), **device.record(placement),
    }
    if diverged is not None:
        return _diverged(result, diverged, run_dir, status, wandb_run, info)
    scores = [job.select_score(row["select"]) for row in history]
    rule = spec.config["task"]["report"]
    best_i = evaluation.chosen_round(scores, rule)
    result.update({
        "metrics": report_metrics(history[-1]), "best": report_metrics(history[best_i]),
        "best_epoch": evaluation.epoch_number(history[best_i]),
        "selection": {"metric": job.selection_metric, "value": scores[best_i], "split": "select",
                      "rule": rule},
        "rank": capaboost.analysis.rank_summary(model)})
    if info.is_main:
        capaboost.save(peft_root, run_dir / WEIGHTS)
        if wandb_run is not None:  # before result.json: a kill in between re-runs this, W&B included
            wandb_run.summary.update({f"best/{k}": v for k, v in result["best"].items()}
                                     | {f"final/{k}": v for k, v in result["metrics"].items()}
                                     | {"best_epoch": result["best_epoch"], **{f"params/{k}": v
                                                                             for k, v in params.items()}})
            wandb_run.finish()
        write_text(result_path, to_json(result))
        print(summary_line(result, result_path))
    distributed.teardown()
    return result


def to_json(result: dict[str, Any]) -> str:
    """Strict JSON (a bare NaN is refused here rather than written for other readers to choke on)."""
    return json.dumps(result, indent=2, default=str, allow_nan=False) + "\n"


def _diverged(result: dict[str, Any], stop: divergence.Diverged, run_dir: Path, status: lifecycle.Status,
              wandb_run: Any, info: distributed.DistInfo) -> dict[str, Any]:
    """result.json with status ``diverged`` and where; no weights file, no rank (tasks.divergence)."""
    result.update(status="diverged", diverged=stop.record())
    status.outcome = "diverged"
    if info.is_main:
        if wandb_run is not None:
            wandb_run.summary.update({"diverged_at_step": stop.step})
            wandb_run.finish()
        write_text(run_dir / RESULT, to_json(result))
        print(f"diverged: {stop}; stopped there. {run_dir / RESULT} records status diverged (a rerun is a "
              f"no-op; force=true starts over)", file=sys.stderr, flush=True)
    distributed.teardown()
    return result


def reuse_result(path: Path, sweep: str | None, locked: bool = False) -> dict[str, Any]:
    """A finished run asked for again trains nothing. A sweep that reuses it is added to its ``sweeps``
    (so that sweep's tables find it); otherwise only the mtime moves, so "results newer than this
    command" (a sweep re-run, the contract's cli-smoke) include results that were already there.

    The append is a read-modify-write: it holds the run lock (``locked``: the caller already does),
    so two sweeps reusing one run at once both end up in the file.
    """
    result = json.loads(path.read_text())
    if not sweep or sweep in result.get("sweeps", []):
        os.utime(path)
        return result
    lock = None if locked else runlock.acquire(path.parent, wait=True, poll_s=0.5)
    try:
        result = json.loads(path.read_text())  # again, under the lock
        if sweep not in result.setdefault("sweeps", []):
            result["sweeps"].append(sweep)
            write_text(path, json.dumps(result, indent=2, default=str) + "\n")
    finally:
        if lock is not None:
            lock.release()
    return result


def summary_line(result: dict[str, Any], path: Path) -> str:
    main = result["main_metric"]
    best, final = (f"{m[main]:.4f}" if main in m else "n/a" for m in (result["best"], result["metrics"]))
    p = result["params"]
    return (f"done {result['task']} {result['model']} {result['peft']} d={result['d']} "
            f"density={result['density']:g} seed={result['seed']}: {main} best {best} "
            f"(epoch {result['best_epoch']}, {result['selection']['rule']}) final {final}; params "
            f"{p['trainable']:,} trainable / {p['effective']:,} effective / {p['total']:,} total; "
            f"{result['runtime_s']:.0f}s -> {path}")


def data_source(spec: RunSpec) -> str:
    data = spec.config["data"]
    return data["path"] if data["source"] == "path" else data["source"]

