"""One run on the stock ``transformers.Trainer``: PEFT, arguments, resume, result.json.

The Trainer is used as shipped; everything CapaBoost-specific sits in small pieces it already supports:
a model wrapper whose ``state_dict`` holds only the trainable tensors (so checkpoints are the PEFT
weights, head and optimizer state, and ``resume_from_checkpoint`` reloads them onto the rebuilt frozen
backbone), a callback that evaluates every split at each epoch end (``tasks.training.evaluation``), and the
Trainer's own AdamW parameter groups (no decay on biases and LayerNorm weights).
"""
from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed
from transformers.trainer_callback import PrinterCallback

import capaboost
from tasks import result as schema
from tasks.cluster import distributed, finished, lifecycle, runlock, signals
from tasks.cluster import status as run_status
from tasks.cluster.checkpoints import CHECKPOINTS, CompleteCheckpoints, newest_marked, resume_point
from tasks.config.runspec import ConfigError, RunSpec
from tasks.data import check as datacheck
from tasks.training import baselines, clipping, device, divergence, evaluation, models, progress
from tasks.training.evaluation import EpochEvaluation, epoch_history, report_metrics
from tasks.training.job import Job
from tasks.training.peft import TrainerModel, attach_peft, count_parameters
from tasks.training.provenance import WandbStep, git_sha, run_name, start_wandb, versions

RESULT, WEIGHTS = schema.RESULT, schema.WEIGHTS  # the public names they had here


# --- model ----------------------------------------------------------------------------------------------

# --- the run --------------------------------------------------------------------------------------------

def suite(spec: RunSpec) -> Any:
    """The run's task suite (tasks/suites/<family>.py): its ``load(spec)`` and ``prepare(spec, raw)``."""
    return importlib.import_module(f"tasks.suites.{spec.family}")


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
        lr_scheduler_type=hp["lr_scheduler"], optim="adamw_torch",
        # official: tasks.training.clipping
        max_grad_norm=0.0 if tr["clip"] == "official" else hp["max_grad_norm"],
        fp16=placement.precision == "fp16", bf16=placement.precision == "bf16",
        eval_strategy="no", save_strategy="epoch", save_total_limit=None,  # rotated after the marker
        logging_strategy="steps", logging_steps=tr["logging_steps"],
        report_to=["wandb"] if spec.config["logger"]["name"] == "wandb" else "none", run_name=run_name(spec),
        seed=spec.seed, data_seed=spec.seed, remove_unused_columns=False, label_names=job.label_names,
        train_sampling_strategy=job.train_sampling,
        disable_tqdm=not (tr["progress"] and progress.bars()), dataloader_num_workers=tr["num_workers"],
        use_cpu=placement.device == "cpu", dataloader_pin_memory=placement.device == "cuda",
        **distributed.trainer_overrides(info))


def execute(spec: RunSpec, callbacks: Sequence[TrainerCallback] = ()) -> dict[str, Any]:
    """Train and evaluate one resolved config; returns (and writes) the result dict.

    Idempotent: a finished run dir is a no-op unless ``force`` (once per launch: tasks.cluster.finished); a
    run
    dir with checkpoints resumes; a torn result.json is set aside. One trainer per run dir (a lock): a
    sweep that finds its run held leaves its name for the holder (``RunShared``). Signals save a
    checkpoint and exit (tasks.cluster.lifecycle). A failure before training (not a config error) leaves
    status.json saying why.
    """
    start = time.time()
    run_dir = Path(spec.run_dir)
    result_path = run_dir / RESULT
    force = spec.force and not finished.forced_by_this_launch(run_dir)
    if not force and (done := finished.read(result_path)) is not None:
        print(f"already {done.get('status', 'completed')}: {result_path} (force=true re-runs it)")
        return finished.reuse(result_path, spec.sweep)
    try:
        placement = device.place(spec.config["trainer"])  # DeviceError (one line)
        info = distributed.setup(cuda=placement.device == "cuda")
        distributed.check_same("run directory (from the composed config)", spec.run_dir, info)  # [ddp]
    except Exception as error:
        if not isinstance(error, ConfigError):  # a config error is one line, exit 2, nothing written
            run_status.record_failure(run_dir, error)
        raise
    raw = datacheck.load(spec, suite(spec).load)  # DataError (one line) before the run directory exists
    try:
        with lifecycle.guard(run_dir, info, spec.config["trainer"]) as (status, preemption):
            if not force and finished.read(result_path, set_aside=True) is not None:
                return finished.reuse(result_path, spec.sweep, locked=True)  # the trainer waited for
            return _train(spec, callbacks, info, preemption, status, start, placement, force, raw)
    except runlock.RunShared:
        raise
    except runlock.RunLocked as held:
        if not spec.sweep:
            raise
        finished.record_pending(run_dir, spec.sweep)
        if finished.read(result_path) is not None:  # the holder finished meanwhile: add the name ourselves
            return finished.reuse(result_path, spec.sweep)
        raise runlock.RunShared(f"{held}; sweep {spec.sweep} is recorded there: the holder adds it to "
                                "result.json when it finishes (make status shows the run)") from None


def _train(spec: RunSpec, callbacks: Sequence[TrainerCallback], info: distributed.DistInfo,
           preemption: signals.Preemption, status: run_status.Status, start: float,
           placement: device.Placement, force: bool, raw: Any = None) -> dict[str, Any]:
    run_dir = Path(spec.run_dir)
    result_path = run_dir / RESULT
    if force and info.is_main and not finished.discard_for_force(run_dir):
        print("force=true: no finished result to discard; an unfinished run resumes from its checkpoints")
    distributed.barrier(info)  # [ddp] no rank looks for checkpoints while rank 0 is deleting them
    checkpoint = resume_point(run_dir / CHECKPOINTS) if info.is_main else None  # removes broken ones
    distributed.barrier(info)
    checkpoint = checkpoint if info.is_main else newest_marked(run_dir / CHECKPOINTS)
    distributed.check_same("checkpoint to resume from", str(checkpoint), info)
    if checkpoint:
        print(f"resuming from {checkpoint}")

    set_seed(spec.seed)
    if not progress.bars():
        progress.quiet_libraries()
    job = suite(spec).prepare(spec, raw)
    model, peft_root = attach_peft(job.model, spec)
    models.ready_for_training(model, spec.backbone, placement.precision,
                              spec.config["trainer"]["gradient_checkpointing"], frozen=job.frozen_dtype)
    params = count_parameters(model, spec)
    digest = distributed.check_masks(peft_root, info)
    wrapped = TrainerModel(model)
    baseline = baselines.is_baseline(spec.method)
    schedule = baselines.adalora_callback(model, spec.capaboost_config["options"]) if baseline else None

    args = training_args(spec, run_dir, job, info, placement)
    use_wandb = spec.config["logger"]["name"] == "wandb" and info.is_main
    wandb_run = start_wandb(spec, run_dir, checkpoint) if use_wandb else None
    epochs = job.evaluator or EpochEvaluation(job.evals, spec.config["task"]["eval_every"])
    complete = CompleteCheckpoints(spec.config["trainer"]["save_total_limit"], info,
                                   on_saved=lambda step: status.write("running", step=step))
    steps = [WandbStep(wandb_run)] if wandb_run else []  # before `complete`: its marker covers the step file
    tr = spec.config["trainer"]
    if tr["clip"] == "official":
        steps.append(clipping.OfficialClip(model, spec.hparams["max_grad_norm"]))
    lines = [progress.ProgressLines(tr["progress_every_s"])] if tr["progress"] and not progress.bars() else []
    trainer = Trainer(model=wrapped, args=args, train_dataset=job.train, data_collator=job.collator,
                      callbacks=[epochs, *steps, complete, preemption, divergence.Divergence(), *lines,
                                 *filter(None, [schedule]),
                                 *callbacks])
    if lines:
        trainer.remove_callback(PrinterCallback)  # raw log dicts: the progress lines say it readably
    epochs.trainer = trainer
    diverged = None
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
    # a finished outcome: result.json says where (tasks.training.divergence)
    except divergence.Diverged as stop:
        diverged = stop

    history = epoch_history(trainer.state.log_history, list(job.evals), job.aliases)
    if not history and diverged is None:
        raise RuntimeError("training finished without a single evaluation round")
    if baseline:  # AdaLoRA's budget is known after pruning
        params = count_parameters(model, spec)
    result = schema.build(  # every key defined once, in tasks/result.py
        task=spec.task, model=spec.model, peft=spec.peft, method=spec.method, capaboost=spec.capaboost,
        d=spec.d, density=spec.density, mask=spec.mask, seed=spec.seed, mask_seed=spec.mask_seed,
        metrics=None, best=None, best_epoch=None, epochs_evaluated=len(history), selection=None,
        main_metric=spec.main_metric, params=params, status="completed",
        runtime_s=round(time.time() - start, 2), resumed_from=checkpoint,
        global_step=trainer.state.global_step, git_sha=git_sha(), versions=versions(),
        config=spec.config, hparams=spec.hparams, protocol=spec.protocol, group=spec.group,
        identity=spec.identity, identity_key=spec.identity_key, sweeps=[spec.sweep] if spec.sweep else [],
        mask_digest=digest, rank=None, world_size=info.world_size,
        per_device_batch_size=args.per_device_train_batch_size, grad_accum=args.gradient_accumulation_steps,
        run_dir=str(run_dir), history=divergence.finite_or_none(history), **device.record(placement),
        data_digest=path_digests(spec) if info.is_main else None)
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
        "rank": (baselines.rank_summary if baseline else capaboost.analysis.rank_summary)(model)})
    if info.is_main:
        if job.finish is not None:  # before result.json: a kill in between re-runs the whole run
            job.finish(result, run_dir)
        if baseline:
            baselines.save(peft_root, run_dir / baselines.WEIGHTS_DIR)
        else:
            capaboost.save(peft_root, run_dir / WEIGHTS)
        if wandb_run is not None:  # before result.json: a kill in between re-runs this, W&B included
            wandb_run.summary.update({f"best/{k}": v for k, v in result["best"].items()}
                                     | {f"final/{k}": v for k, v in result["metrics"].items()}
                                     | {"best_epoch": result["best_epoch"], **{f"params/{k}": v
                                                                             for k, v in params.items()}})
            wandb_run.finish()
        finished.write(result_path, result)  # with the sweeps that found this run held meanwhile
        print(summary_line(result, result_path))
    distributed.teardown()
    return result


def _diverged(result: dict[str, Any], stop: divergence.Diverged, run_dir: Path, status: run_status.Status,
              wandb_run: Any, info: distributed.DistInfo) -> dict[str, Any]:
    """result.json with status ``diverged`` and where; no weights file, no rank
    (tasks.training.divergence)."""
    result.update(status="diverged", diverged=stop.record())
    status.outcome = "diverged"
    if info.is_main:
        if wandb_run is not None:
            wandb_run.summary.update({"diverged_at_step": stop.step})
            wandb_run.finish()
        finished.write(run_dir / RESULT, result)
        print(f"diverged: {stop}; stopped there. {run_dir / RESULT} records status diverged (a rerun is a "
              f"no-op; force=true starts over)", file=sys.stderr, flush=True)
    distributed.teardown()
    return result


reuse_result = finished.reuse  # the public name it had here


def summary_line(result: dict[str, Any], path: Path) -> str:
    main = result["main_metric"]
    best, final = (f"{m[main]:.4f}" if main in m else "n/a" for m in (result["best"], result["metrics"]))
    p = result["params"]
    return (f"done {result['task']} {result['model']} {result['peft']} d={result['d']} "
            f"density={result['density']:g} seed={result['seed']}: {main} best {best} "
            f"(epoch {result['best_epoch']}, {result['selection']['rule']}) final {final}; params "
            f"{p['trainable']:,} trainable / {p['effective']:,} effective / {p['total']:,} total; "
            f"{result['runtime_s']:.0f}s -> {path}")


def path_digests(spec: RunSpec) -> dict[str, str] | None:
    """Content digest per split of a run's ``data.path`` data (None for hub and fixture data): what
    the tables compare with the official splits' digests that make prefetch recorded."""
    from tasks.data import load as data

    if spec.config["data"]["source"] != "path":
        return None
    return data.path_digests(spec.family, spec.dataset, spec.protocol, spec.config["data"]["path"])
