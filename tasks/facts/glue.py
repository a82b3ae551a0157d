"""GLUE's facts: columns and label ids (``nyu-mll/glue``), metrics, the best-epoch rule, protocols, sizes.

Protocols (tasks.data.load applies them; LINs-lab/CapaBoost ``run_glue.py`` for "split",
``run_glue_no_test.py`` for "dev"): "split" halves the dev set of the SMALL tasks into select/report and
holds 1,000 training examples out for selection on the LARGE ones; "dev" trains on train and selects and
reports on the dev set.
"""
from __future__ import annotations

from dataclasses import dataclass

from tasks.facts.common import Selection, Suite

HUB_ID = "nyu-mll/glue"


@dataclass(frozen=True)
class GlueSchema:
    keys: tuple[str, str | None]      # text columns; second is None for single-sentence tasks
    num_labels: int                   # 1 = regression (STS-B)
    metrics: tuple[str, ...]          # what glue_metrics returns for one evaluation split; the first leads
    selection: Selection              # the official best-epoch rule
    train: int                        # hub split sizes (examples): what preflight's costs count
    dev: tuple[int, ...]              # ... of each of dev_splits
    label_names: tuple[str, ...] = ()  # ClassLabel names in hub order (empty for regression)
    dev_splits: tuple[str, ...] = ("validation",)  # hub dev split(s); MNLI: matched first, then mismatched
    score_range: tuple[float, float] | None = None  # regression: the scores' scale (STS-B: 0..5)

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1


_NLI2 = ("entailment", "not_entailment")
_ACC, _ACC_F1 = Selection(("accuracy",)), Selection(("accuracy", "f1"))
# The paper's column order (reporting/layouts.yaml).
GLUE: dict[str, GlueSchema] = {
    "cola": GlueSchema(("sentence", None), 2, ("mcc",), Selection(("mcc",)), 8551, (1043,),
                       ("unacceptable", "acceptable")),
    "sst2": GlueSchema(("sentence", None), 2, ("accuracy",), _ACC, 67349, (872,), ("negative", "positive")),
    "mrpc": GlueSchema(("sentence1", "sentence2"), 2, ("accuracy", "f1"), _ACC_F1, 3668, (408,),
                       ("not_equivalent", "equivalent")),
    "qqp": GlueSchema(("question1", "question2"), 2, ("accuracy", "f1"), _ACC_F1, 363846, (40430,),
                      ("not_duplicate", "duplicate")),
    "stsb": GlueSchema(("sentence1", "sentence2"), 1, ("pearson", "spearman"),
                       Selection(("pearson", "spearman")), 5749, (1500,), score_range=(0.0, 5.0)),
    # MNLI: the official code selects and reports on matched only; the runner adds accuracy_mismatched
    # by evaluating the "report_mismatched" split with the same metric.
    "mnli": GlueSchema(("premise", "hypothesis"), 3, ("accuracy",), _ACC, 392702, (9815, 9832),
                       ("entailment", "neutral", "contradiction"),
                       ("validation_matched", "validation_mismatched")),
    "qnli": GlueSchema(("question", "sentence"), 2, ("accuracy",), _ACC, 104743, (5463,), _NLI2),
    "rte": GlueSchema(("sentence1", "sentence2"), 2, ("accuracy",), _ACC, 2490, (277,), _NLI2),
}
# Tasks whose dev set is halved into select/report under the "split" protocol; the others hold out
# training examples for selection (LINs-lab/CapaBoost run_glue.py: small_datasets / large_data).
SMALL = ("cola", "rte", "mrpc", "stsb")
LARGE = ("sst2", "qqp", "qnli", "mnli")
SELECT_HOLDOUT = 1000  # training examples held out for selection (LARGE tasks, "split")
PROTOCOLS = ("split", "dev")

SUITE = Suite(family="glue", modality="text", tasks=tuple(GLUE),
              main_metric={task: s.metrics[0] for task, s in GLUE.items()},
              selection={task: s.selection for task, s in GLUE.items()},
              protocols=PROTOCOLS, protocol="split", report_rules=("best_select_epoch", "final_epoch"),
              head="seq_cls")
