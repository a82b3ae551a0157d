"""The run's data, loaded and checked against its task's schema before a run directory exists.

The runner calls ``load`` before it takes the run lock: a file that is not UTF-8, a missing column, an
empty split, a label outside the task's label space (a CoLA label of 2, an STS-B score of 37) or a
training set too small for one optimizer step is one ``DataError`` line (run.py: exit 2), and nothing
is written. The loaders themselves (tasks.data.load) raise ValueError naming the file; this module adds the
checks on the loaded values, which the loaders leave alone so they stay usable on any data.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from tasks.config.runspec import RunSpec
from tasks.facts.glue import GLUE
from tasks.facts.vtab import VTAB


class DataError(ValueError):
    """Bad data for this run: one line naming the source and what is wrong."""


def load(spec: RunSpec, loader: Callable[[RunSpec], Any]) -> Any:
    """The suite's ``load(spec)`` (train/select/report splits), checked; raises DataError."""
    source = spec.config["data"]["path"] or spec.config["data"]["source"]
    try:
        raw = loader(spec)
    except (ValueError, KeyError, UnicodeDecodeError) as error:  # the loaders' own one-line refusals
        raise DataError(f"data {spec.task} from {source}: {_one_line(error)}") from None
    problem = schema_problem(spec, raw) or steps_problem(spec, len(raw["train"]))
    if problem:
        raise DataError(f"data {spec.task} from {source}: {problem}")
    return raw


def schema_problem(spec: RunSpec, raw: Any) -> str | None:
    """Why the loaded splits do not fit the task's schema (tasks/facts/), or None."""
    texts: tuple[str, ...] = ()
    labels: tuple[int, tuple[float, float] | None] | None = None  # (num_labels, score range)
    if spec.family == "glue":
        schema = GLUE[spec.dataset]
        texts = tuple(k for k in schema.keys if k is not None)
        labels = (schema.num_labels, schema.score_range)
    elif spec.family == "vtab":
        labels = (VTAB[spec.dataset].num_classes, None)
    for name in raw:
        if len(raw[name]) == 0:
            return f"split {name!r} is empty"
        for key in texts:
            if any(not isinstance(text, str) for text in raw[name][key]):
                return f"split {name!r}: column {key!r} has a missing or non-text value"
        why = labels and _labels(np.asarray(raw[name]["label"], dtype=np.float64), *labels)
        if why:
            return f"split {name!r}: {why}"
    return None


def _labels(labels: np.ndarray, num_labels: int, score_range: tuple[float, float] | None) -> str | None:
    """Class ids in 0..num_labels-1, or (regression) finite scores inside ``score_range``."""
    if num_labels == 1:
        low, high = score_range or (-math.inf, math.inf)
        bad = ~np.isfinite(labels) | (labels < low) | (labels > high)
        want = f"a score in [{low:g}, {high:g}]"
    else:
        bad = ~np.isfinite(labels) | (labels != np.round(labels)) | (labels < 0) | (labels >= num_labels)
        want = f"a class id in 0..{num_labels - 1}"
    if not bad.any():
        return None
    i = int(np.flatnonzero(bad)[0])
    return f"label {labels[i]:g} at row {i} is not {want} ({int(bad.sum())} such row(s))"


def steps_problem(spec: RunSpec, n_train: int) -> str | None:
    """``trainer.epochs`` must give at least one optimizer step (max_steps, when set, decides alone)."""
    hp = spec.hparams
    if hp["max_steps"]:
        return None
    per_epoch = math.ceil(n_train / hp["batch_size"])
    if hp["epochs"] * per_epoch < 1:
        return (f"trainer.epochs={hp['epochs']:g} is less than one optimizer step ({n_train} training "
                f"examples at batch {hp['batch_size']}: {per_epoch} step(s) per epoch)")
    return None


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text[:300] if text else type(error).__name__
