"""Steps per run, examples evaluated, and GPU-hours from FLOPs: the arithmetic, in one place.

Training examples follow the runner's protocols (tasks/data/load.py): under "split" the large GLUE tasks
hold 1,000 training examples out for selection; "dev" trains on the full train split; VTAB "final"
trains on train800val200. Every split but train is evaluated at each ``task.eval_every``-th epoch end
and after the last (GLUE/SQuAD: every epoch; VTAB: the last only), select skipped when it is the same data
as report (tasks/training/evaluation.py). Sequences are counted at max_seq_length, the padded worst case.
"""
from __future__ import annotations

import math
from typing import Any


def _split_sizes(spec: Any) -> tuple[int, list[int], float]:
    """(train rows, dev rows of each dev split, training windows per row) of a GLUE / SQuAD / math task,
    from its facts (tasks/facts/)."""
    from tasks.facts import glue, squad
    from tasks.facts import math as math_facts

    if spec.family == "glue":
        schema = glue.GLUE[spec.dataset]
        return schema.train, list(schema.dev), 1.0
    if spec.family == "squad":
        sizes = squad.SIZES[spec.dataset]
        return sizes.train, [sizes.dev], sizes.features_per_example
    return math_facts.TRAIN_ROWS, [math_facts.PROTOCOL.valid_size, math_facts.TEST_ROWS], 1.0


def train_examples(spec: Any) -> int:
    from tasks.facts import glue, vtab

    limit = spec.config["data"]["train_limit"]
    if spec.family == "vtab":
        return vtab.list_size(spec.dataset, vtab.PROTOCOLS[spec.protocol][0])
    n, _, per_example = _split_sizes(spec)
    if spec.family == "glue" and spec.protocol == "split" and spec.dataset in glue.LARGE:
        n -= glue.SELECT_HOLDOUT
    n = min(n, limit) if limit else n
    return math.ceil(n * per_example)


def eval_examples(spec: Any) -> int:
    """Examples scored in one evaluation round (all evaluation splits of the run)."""
    from tasks.facts import glue, vtab

    limit = spec.config["data"]["eval_limit"]
    if spec.family == "vtab":  # select and report (the same list: scored once)
        splits = [vtab.list_size(spec.dataset, s) for s in dict.fromkeys(vtab.PROTOCOLS[spec.protocol][1:])]
    elif spec.family == "math":
        return min(_split_sizes(spec)[1][0], limit or math.inf)  # a validation round
    else:
        _, dev_rows, per_example = _split_sizes(spec)
        dev = [math.ceil(n * per_example) for n in dev_rows]
        if spec.family == "glue" and spec.protocol == "split":
            # small tasks: dev halved into select + report; large: 1,000 held-out train examples + dev
            splits = [glue.SELECT_HOLDOUT, *dev] if spec.dataset in glue.LARGE else dev
        else:
            splits = dev  # select is the report split: scored once
    return sum(min(n, limit) if limit else n for n in splits)


def schedule(spec: Any, per_device: int, grad_accum: int) -> tuple[int, int]:
    """(optimizer steps, evaluation rounds) as the HF Trainer counts them on one device; generation
    tasks (math): validation rounds every task.eval_every_steps and at the last step."""
    hp = spec.hparams
    per_epoch = max(1, math.ceil(math.ceil(train_examples(spec) / per_device) / grad_accum))
    steps = hp["max_steps"] or math.ceil(hp["epochs"] * per_epoch)
    every_steps = spec.config["task"].get("eval_every_steps")
    if every_steps:
        return steps, steps // every_steps + (1 if steps % every_steps else 0)
    epochs, every = math.ceil(steps / per_epoch), spec.config["task"]["eval_every"]
    return steps, math.ceil(epochs / every) if every else 1  # rounds at multiples of every, and the last


def gpu_hours(flops: float, tflops: float, mfu: float) -> float:
    """FLOPs / (peak x MFU), in hours."""
    return flops / (tflops * 1e12 * mfu) / 3600


def wall_hours(hours: list[float], gpus: int) -> float:
    """Hours until the last run ends on ``gpus`` GPUs, one run per GPU at a time, the runs taken longest
    first, each onto the GPU that frees first (LPT: within 4/3 of the best order; the longest run and
    GPU-hours / gpus are floors)."""
    import heapq

    free = [0.0] * gpus
    for h in sorted(hours, reverse=True):
        heapq.heapreplace(free, free[0] + h)
    return max(free)
