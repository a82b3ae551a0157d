"""Per-epoch evaluation on every split, and the history and report metrics read back from it.

Each evaluated epoch end evaluates every split *before* the Trainer saves, so the history lives in the
checkpoint's ``log_history`` and survives a restart. ``task.eval_every`` spaces the rounds (GLUE/SQuAD:
every epoch, as the official code; VTAB: only after the last epoch); the last epoch is always evaluated.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from transformers import Trainer, TrainerCallback, TrainingArguments

_EVAL_NOISE = ("runtime", "samples_per_second", "steps_per_second", "epoch")


@dataclass
class EvalSplit:
    dataset: Any                                   # model-ready columns only
    metrics: Callable[[Any], dict[str, float]]     # EvalPrediction -> paper-named metrics


def eval_splits(raw: Any, limit: int | None, build: Callable[[Any], EvalSplit]
                ) -> tuple[dict[str, EvalSplit], dict[str, str]]:
    """Every non-train split of ``raw``, built once; "select" aliases "report" when both are the same data."""
    aliases = {"select": "report"} if same_data(raw["select"], raw["report"]) else {}
    evals = {name: build(eval_limit(raw[name], limit))
             for name in raw if name != "train" and name not in aliases}
    return evals, aliases


def eval_limit(dataset: Any, limit: int | None) -> Any:
    return dataset if limit is None or limit >= len(dataset) else dataset.select(range(limit))


def same_data(a: Any, b: Any) -> bool:
    return a is b or getattr(a, "_fingerprint", None) == getattr(b, "_fingerprint", object())


class EpochEvaluation(TrainerCallback):
    """Evaluates every split at each ``every``-th epoch end and at the last; the Trainer then checkpoints,
    history included. ``every=None``: the last epoch only."""

    def __init__(self, evals: dict[str, EvalSplit], every: int | None = 1) -> None:
        self.evals = evals
        self.every = every
        self.trainer: Trainer | None = None

    def due(self, state: Any) -> bool:
        last = state.global_step >= state.max_steps
        return last or (self.every is not None and round(state.epoch or 0) % self.every == 0)

    def on_epoch_end(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        if not self.due(state):
            return
        for name, split in self.evals.items():
            self.trainer.compute_metrics = split.metrics
            # "eval_" prefix: W&B files these under eval/ (anything else lands in train/)
            self.trainer.evaluate(split.dataset, metric_key_prefix=f"eval_{name}")
        self.trainer.compute_metrics = None


def epoch_history(log_history: list[dict], splits: Sequence[str], aliases: dict[str, str]) -> list[dict]:
    """Per evaluation round (one per epoch): {"epoch", "step", <split>: {metric: value}}."""
    rounds: dict[int, dict] = {}
    for entry in log_history:
        # one entry per evaluate() call; "report_mismatched_accuracy" belongs to the longer split name
        hits = [s for s in splits if any(k.startswith(f"eval_{s}_") for k in entry)]
        if not hits:
            continue
        split = max(hits, key=len)
        prefix = f"eval_{split}_"
        row = rounds.setdefault(entry["step"], {"epoch": entry.get("epoch"), "step": entry["step"]})
        row[split] = {k[len(prefix):]: v for k, v in entry.items()
                      if k.startswith(prefix) and k[len(prefix):] not in _EVAL_NOISE}
    history = [rounds[s] for s in sorted(rounds)]
    for row in history:
        for alias, target in aliases.items():
            row[alias] = row[target]
    return history


def chosen_round(scores: Sequence[float], rule: str) -> int:
    """The evaluation round result.json reports as "best" under ``rule`` (``task.report``, see
    tasks.config.runspec.REPORT_RULES): the last round, or the first of the best-scoring rounds on the select
    split
    (under VTAB's protocols the select split is the reported one: hence the name best_test_epoch)."""
    if rule == "final_epoch":
        return len(scores) - 1
    if rule not in ("best_select_epoch", "best_test_epoch"):
        raise ValueError(f"unknown report rule {rule!r}")
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


def epoch_number(row: dict) -> int:
    """The 1-based epoch a history row was evaluated in (a run cut by max_steps: the epoch it was in)."""
    return max(1, math.ceil(row["epoch"] - 1e-6))


def report_metrics(row: dict) -> dict[str, float]:
    """The report split's paper metrics; each extra report split adds <metric>_<suffix> (MNLI mismatched)."""
    out = {k: v for k, v in row["report"].items() if k != "loss"}
    for name, metrics in row.items():
        if name.startswith("report_"):
            suffix = name[len("report_"):]
            out.update({f"{k}_{suffix}": v for k, v in metrics.items() if k != "loss"})
    return out
