"""SQuAD v1.1 / v2.0 on the common runner: overlapping windows, span heads, official-style EM/F1.

Evaluation features carry their gold start/end positions too (the same windows as training, labelled in
the same tokenisation pass), so the Trainer computes a real eval loss and hands the logits to
``compute_metrics``, which maps them back to answer text per question (n-best 20, max answer length 30,
null answer for v2).
"""
from __future__ import annotations

from functools import partial
from typing import Any

from transformers import default_data_collator

from tasks.config.runspec import RunSpec
from tasks.facts.squad import SUITE
from tasks.training import models
from tasks.training.evaluation import EvalSplit, eval_splits
from tasks.training.job import Job, data_source

LABELS = ["start_positions", "end_positions"]
KEEP = ("example_id", "offset_mapping")


def load(spec: RunSpec) -> Any:
    """train/select/report splits (tasks.data.check checks them)."""
    from tasks.data.load import load_squad

    data = spec.config["data"]
    return load_squad(spec.dataset, data_source(spec), seed=data["split_seed"],
                      train_limit=data["train_limit"])


def prepare(spec: RunSpec, raw: Any = None) -> Job:
    from tasks.facts.families import selection
    from tasks.suites.metrics import squad_metrics
    from tasks.suites.squad_features import (
        postprocess_predictions,
        prepare_eval_features,
        prepare_train_features,
    )

    data, hp, rule = spec.config["data"], spec.hparams, selection(spec.family, spec.dataset)
    version_2 = spec.dataset == "v2"
    raw = load(spec) if raw is None else raw
    corpus = (text for column in ("question", "context") for text in raw["train"][column])
    model, tokenizer = models.load_text(spec.config["model"], SUITE.head, corpus=corpus,
                                        max_length=hp["max_seq_length"])
    window = {"tokenizer": tokenizer, "max_length": hp["max_seq_length"], "stride": hp["doc_stride"]}
    train_fn = partial(prepare_train_features, **window)
    eval_fn = partial(prepare_eval_features, **window, labels=True)

    def split(examples: Any) -> EvalSplit:
        features = examples.map(eval_fn, batched=True, remove_columns=examples.column_names)
        model_inputs = features.remove_columns(list(KEEP))

        def scorer(p: Any) -> dict[str, float]:
            start, end = p.predictions
            predicted = postprocess_predictions(examples, features, start, end, version_2=version_2)
            return squad_metrics(predicted, examples, version_2)

        return EvalSplit(model_inputs, scorer)

    evals, aliases = eval_splits(raw, data["eval_limit"], split)
    train = raw["train"].map(train_fn, batched=True, remove_columns=raw["train"].column_names)
    return Job(model=model, train=train, evals=evals, collator=default_data_collator, label_names=LABELS,
               select_score=rule.score, selection_metric=rule.name, aliases=aliases)
