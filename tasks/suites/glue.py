"""GLUE on the common runner: tokenise pairs, classify (STS-B: regress), score with the paper's metrics."""
from __future__ import annotations

from functools import partial
from typing import Any

from transformers import DataCollatorWithPadding

from tasks.config.runspec import RunSpec
from tasks.facts.glue import SUITE
from tasks.training import models
from tasks.training.evaluation import EvalSplit, eval_splits
from tasks.training.job import Job, data_source


def _encode(batch: dict[str, list], tokenizer: Any, keys: list[str], max_length: int) -> dict[str, list]:
    enc = tokenizer(*(batch[k] for k in keys), truncation=True, max_length=max_length)
    enc["labels"] = batch["label"]
    return enc


def load(spec: RunSpec) -> Any:
    """train/select/report splits under the run's protocol (tasks.data.check checks them)."""
    from tasks.data.load import load_glue

    data = spec.config["data"]
    return load_glue(spec.dataset, data_source(spec), spec.protocol, seed=data["split_seed"],
                     train_limit=data["train_limit"])


def prepare(spec: RunSpec, raw: Any = None) -> Job:
    from tasks.facts.glue import GLUE
    from tasks.suites.metrics import glue_metrics

    task, schema, data = spec.dataset, GLUE[spec.dataset], spec.config["data"]
    max_length = spec.hparams["max_seq_length"]
    raw = load(spec) if raw is None else raw
    keys = [k for k in schema.keys if k is not None]
    corpus = (text for k in keys for text in raw["train"][k])
    model, tokenizer = models.load_text(spec.config["model"], SUITE.head, schema.num_labels, corpus,
                                        max_length)
    encode = partial(_encode, tokenizer=tokenizer, keys=keys, max_length=max_length)

    def tokenised(ds: Any) -> Any:
        return ds.map(encode, batched=True, remove_columns=ds.column_names)

    def scorer(p: Any) -> dict[str, float]:
        return glue_metrics(task, p.predictions, p.label_ids)

    evals, aliases = eval_splits(raw, data["eval_limit"], lambda ds: EvalSplit(tokenised(ds), scorer))
    return Job(model=model, train=tokenised(raw["train"]), evals=evals,
               collator=DataCollatorWithPadding(tokenizer), label_names=["labels"],
               select_score=schema.selection.score, selection_metric=schema.selection.name,
               aliases=aliases)
