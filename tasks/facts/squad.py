"""SQuAD's facts: ``rajpurkar/squad`` (v1.1) and ``rajpurkar/squad_v2``; the paper selects and reports on
the dev set (protocol "dev"), by F1."""
from __future__ import annotations

from dataclasses import dataclass

from tasks.facts.common import Selection, Suite

HUB_ID = {"v1": "rajpurkar/squad", "v2": "rajpurkar/squad_v2"}
VERSIONS = tuple(HUB_ID)
# answers: {"text": [...], "answer_start": [...]}; both empty for SQuAD 2.0's unanswerable questions
COLUMNS = ("id", "title", "context", "question", "answers")
# The official JSON downloads (train, dev) a local copy may hold instead of a save_to_disk folder.
JSON_FILES = {"v1": ("train-v1.1.json", "dev-v1.1.json"), "v2": ("train-v2.0.json", "dev-v2.0.json")}


@dataclass(frozen=True)
class Sizes:
    train: int
    dev: int
    # training windows per example (384 tokens, stride 128): 1.01 is what the transformers run_qa example
    # reports for v1.1 with a BERT tokenizer (88,524 / 87,599); assumed the same for v2 and DeBERTa's
    # tokenizer (an approximation)
    features_per_example: float = 1.01


SIZES = {"v1": Sizes(87599, 10570), "v2": Sizes(130319, 11873)}

SUITE = Suite(family="squad", modality="text", tasks=VERSIONS, main_metric=dict.fromkeys(VERSIONS, "f1"),
              selection=dict.fromkeys(VERSIONS, Selection(("f1",))), protocols=("dev",), protocol="dev",
              report_rules=("best_select_epoch", "final_epoch"), head="qa")
