"""Every check and estimate for one run, with the expensive parts cached per distinct shape.

A sweep's runs differ mostly in seeds and tasks that share a shape: the model is built once per
distinct (model, head, PEFT config, labels) and traced once per distinct (model, head, PEFT shapes,
micro-batch, sequence, precision, accumulation). The head's label count is left out of the trace key
(under 0.1% of memory and FLOPs); densities, mask kinds and seeds change no shape, so they share one
trace but get their own parameter counts.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from preflight import cost, environment, facts, generation
from preflight.build import Built, build, num_outputs
from preflight.trace import StepTrace, trace_step

GIB = 2**30


@dataclass(frozen=True)
class Target:
    gpu: str                  # a name in gpus.yaml
    gpu_mem: float            # GiB available to the run

    @property
    def info(self) -> dict[str, Any]:
        return facts.gpu(self.gpu)


@dataclass
class RunCheck:
    overrides: list[str]
    status: str = "ok"                         # ok | FAIL (cannot start) | NO-FIT
    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    precision: str = ""                        # what the estimate assumes
    precision_note: str | None = None
    per_device: int = 0
    grad_accum: int = 1
    need_gib: float | None = None              # estimated peak incl. overhead, at the configured accumulation
    fix: str | None = None                     # override that makes it fit
    fix_gib: float | None = None
    tflop_per_step: float | None = None        # one optimizer step (all micro-batches)
    steps: int = 0
    eval_rounds: int = 0
    total_tflop: float = 0.0                   # training + evaluation, whole run
    gpu_hours: float | None = None             # training + evaluation (generation included)
    train_gib: float | None = None             # generation tasks: the training step's peak ...
    gen_gib: float | None = None               # ... and generation's (need_gib is the larger)
    gen_hours: float | None = None             # generation's share of gpu_hours

    @property
    def fits(self) -> bool | None:
        return None if self.need_gib is None else self.status != "NO-FIT" and self.fix is None


def used_precision(spec: Any, target: Target) -> tuple[str, str | None]:
    """(precision the estimate assumes, a note when it is not the resolved value)."""
    resolved = spec.hparams["precision"]
    if resolved == "auto":  # what tasks/training/device.py picks on that GPU
        return target.info["precision"], None
    return resolved, None


def needed_gib(trace: StepTrace) -> float:
    g = facts.load("gpus")
    return trace.peak_bytes * (1 + g["fragmentation"]) / GIB + g["overhead_gib"]


_BUILT: dict[str, Built | Exception] = {}   # per process: shapes do not depend on the target GPU
_TRACES: dict[str, StepTrace] = {}


class Planner:
    """Checks runs against one target; builds and traces are shared by every planner of the process."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._built, self._traces = _BUILT, _TRACES

    def _build(self, spec: Any, precision: str) -> Built:
        key = json.dumps([spec.config["model"], spec.family, num_outputs(spec), spec.capaboost_config,
                          precision, spec.config["trainer"]["gradient_checkpointing"]], sort_keys=True,
                         default=str)
        if key not in self._built:
            try:
                self._built[key] = build(spec, precision)
            except Exception as error:  # noqa: BLE001 -- reported as the run's failure
                self._built[key] = error
        built = self._built[key]
        if isinstance(built, Exception):
            raise built
        return built

    def _trace(self, spec: Any, built: Built, micro: int, precision: str, accum: int) -> StepTrace:
        cb = {k: v for k, v in spec.capaboost_config.items() if k not in ("density", "mask", "seed")}
        seq = spec.hparams["max_seq_length"] if spec.modality == "text" else 0
        key = json.dumps([spec.config["model"], spec.family, cb, micro, seq, precision, min(accum, 2),
                          spec.config["trainer"]["gradient_checkpointing"]],
                         sort_keys=True, default=str)
        if key not in self._traces:
            with built.mode:
                self._traces[key] = trace_step(built.model, lambda b=1: built.make_batch(b, seq), precision,
                                               accum, micro)
        return self._traces[key]

    def check(self, overrides: list[str], spec: Any) -> RunCheck:
        row = RunCheck(overrides)
        for problem in (environment.tokenizer_problem(spec.config["model"]), environment.data_problem(spec)):
            if problem:
                row.problems.append(problem)
        hp = spec.hparams
        row.grad_accum = hp["grad_accum"]
        row.per_device = hp["batch_size"] // hp["grad_accum"]  # one GPU per run (the SLURM default)
        row.precision, row.precision_note = used_precision(spec, self.target)
        try:
            built = self._build(spec, row.precision)
        except Exception as error:  # noqa: BLE001
            row.problems.append(f"cannot build the model: {type(error).__name__}: {error}")
            row.status = "FAIL"
            return row
        row.counts = built.counts
        trace = self._trace(spec, built, row.per_device, row.precision, row.grad_accum)
        row.need_gib = needed_gib(trace)
        if row.need_gib > self.target.gpu_mem:
            self._find_fix(row, spec, built, trace)
        self._cost(row, spec, trace)
        if spec.family == "math":
            self._generation(row, spec, built, trace)
        if row.problems:
            row.status = "FAIL"
        elif row.need_gib > self.target.gpu_mem and row.fix is None:
            row.status = "NO-FIT"
        return row

    def _find_fix(self, row: RunCheck, spec: Any, built: Built, trace: StepTrace) -> None:
        """The smallest larger grad_accum (same global batch) whose micro-batch fits."""
        static = StepTrace(trace.resident_bytes, trace.resident_bytes, 0, 0)  # weights + AdamW, no batch
        if needed_gib(static) > self.target.gpu_mem:
            return  # no micro-batch can fit
        batch = spec.hparams["batch_size"]
        for accum in range(row.grad_accum + 1, batch + 1):
            if batch % accum:
                continue
            need = needed_gib(self._trace(spec, built, batch // accum, row.precision, accum))
            if need <= self.target.gpu_mem:
                row.fix, row.fix_gib = f"trainer.grad_accum={accum}", need
                return

    def _generation(self, row: RunCheck, spec: Any, built: Built, trace: StepTrace) -> None:
        """Generation's peak memory and time (preflight/generation.py), folded into the run's figures;
        its evaluation FLOPs replace the per-epoch evaluation counted by _cost."""
        from tasks.facts.math import frozen_dtype

        matmuls = "bf16" if frozen_dtype(spec.config["model"]) == "bfloat16" else row.precision
        seq = spec.hparams["max_seq_length"]
        gen = generation.estimate(spec, built.model.config, trace.resident_bytes,
                                  trace.forward_flops / (row.per_device * seq), matmuls, self.target.info,
                                  row.eval_rounds)
        g = facts.load("gpus")
        row.train_gib = row.need_gib
        row.gen_gib = gen.peak_bytes * (1 + g["fragmentation"]) / GIB + g["overhead_gib"]
        row.need_gib = max(row.train_gib, row.gen_gib)
        if row.gen_gib > self.target.gpu_mem and row.fix is None:
            row.problems.append(f"generation needs {row.gen_gib:.1f} GiB > {self.target.gpu_mem:g} "
                                f"(lower trainer.eval_batch_size)")
        tflops = self.target.info["tflops"].get(matmuls) or self.target.info["tflops"]["fp32"]
        train_flops = row.steps * trace.train_flops * row.grad_accum
        row.total_tflop = train_flops / 1e12
        row.gen_hours = gen.seconds / 3600
        row.gpu_hours = cost.gpu_hours(train_flops, tflops, g["mfu"]) + row.gen_hours

    def _cost(self, row: RunCheck, spec: Any, trace: StepTrace) -> None:
        row.tflop_per_step = trace.train_flops * row.grad_accum / 1e12
        row.steps, row.eval_rounds = cost.schedule(spec, row.per_device, row.grad_accum)
        fwd_per_example = trace.forward_flops / row.per_device
        total = row.steps * trace.train_flops * row.grad_accum + \
            row.eval_rounds * cost.eval_examples(spec) * fwd_per_example
        row.total_tflop = total / 1e12
        g = facts.load("gpus")
        tflops = self.target.info["tflops"].get(row.precision) or self.target.info["tflops"]["fp32"]
        row.gpu_hours = cost.gpu_hours(total, tflops, g["mfu"])
