"""Each task's columns, label space and metrics, in one place, so data, fixtures and the runner agree.

GLUE columns and label ids follow ``nyu-mll/glue``; SQuAD follows ``rajpurkar/squad`` (v1.1) and
``rajpurkar/squad_v2``; VTAB-1k names are the folder names of the pre-split ``vtab-1k`` image-list
release used by NOAH and VPT (``cifar`` is CIFAR-100, ``kitti`` is KITTI closest-vehicle distance,
``dsprites_loc``/``dsprites_ori`` are dSprites x-position/orientation, ``smallnorb_azi``/``smallnorb_ele``
are smallNORB azimuth/elevation, ``clevr_count``/``clevr_dist`` are CLEVR count/closest-object distance).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GlueSchema:
    keys: tuple[str, str | None]      # text columns; second is None for single-sentence tasks
    num_labels: int                   # 1 = regression (STS-B)
    metrics: tuple[str, ...]          # what glue_metrics returns for one evaluation split
    # the official best-epoch rule (see tasks.suites.metrics.selection_score)
    selection: str
    label_names: tuple[str, ...] = ()  # ClassLabel names in hub order (empty for regression)
    dev_splits: tuple[str, ...] = ("validation",)  # hub dev split(s); MNLI: matched first, then mismatched
    score_range: tuple[float, float] | None = None  # regression: the scores' scale (STS-B: 0..5)

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1


_NLI2 = ("entailment", "not_entailment")
GLUE: dict[str, GlueSchema] = {
    "cola": GlueSchema(("sentence", None), 2, ("mcc",), "mcc", ("unacceptable", "acceptable")),
    "sst2": GlueSchema(("sentence", None), 2, ("accuracy",), "accuracy", ("negative", "positive")),
    "mrpc": GlueSchema(("sentence1", "sentence2"), 2, ("accuracy", "f1"), "mean(accuracy,f1)",
                       ("not_equivalent", "equivalent")),
    "qqp": GlueSchema(("question1", "question2"), 2, ("accuracy", "f1"), "mean(accuracy,f1)",
                      ("not_duplicate", "duplicate")),
    "stsb": GlueSchema(("sentence1", "sentence2"), 1, ("pearson", "spearman"), "mean(pearson,spearman)",
                       score_range=(0.0, 5.0)),
    # MNLI: the official code selects and reports on matched only; the runner adds accuracy_mismatched
    # by evaluating the "report_mismatched" split with the same metric.
    "mnli": GlueSchema(("premise", "hypothesis"), 3, ("accuracy",), "accuracy",
                       ("entailment", "neutral", "contradiction"),
                       ("validation_matched", "validation_mismatched")),
    "qnli": GlueSchema(("question", "sentence"), 2, ("accuracy",), "accuracy", _NLI2),
    "rte": GlueSchema(("sentence1", "sentence2"), 2, ("accuracy",), "accuracy", _NLI2),
}
GLUE_HUB_ID = "nyu-mll/glue"
# Tasks whose dev set is halved into select/report under the "split" protocol; the others hold out
# training examples for selection (LINs-lab/CapaBoost run_glue.py: small_datasets / large_data).
GLUE_SMALL = ("cola", "rte", "mrpc", "stsb")
GLUE_LARGE = ("sst2", "qqp", "qnli", "mnli")


@dataclass(frozen=True)
class VtabSchema:
    num_classes: int
    group: str  # "natural" | "specialized" | "structured"


_VTAB_SPEC = {
    "natural": {"cifar": 100, "caltech101": 102, "dtd": 47, "oxford_flowers102": 102, "oxford_iiit_pet": 37,
                "svhn": 10, "sun397": 397},
    "specialized": {"patch_camelyon": 2, "eurosat": 10, "resisc45": 45, "diabetic_retinopathy": 5},
    "structured": {"clevr_count": 8, "clevr_dist": 6, "dmlab": 6, "kitti": 4, "dsprites_loc": 16,
                   "dsprites_ori": 16, "smallnorb_azi": 18, "smallnorb_ele": 9},
}
VTAB: dict[str, VtabSchema] = {name: VtabSchema(n, group)
                               for group, spec in _VTAB_SPEC.items() for name, n in spec.items()}
VTAB_GROUPS: tuple[str, ...] = tuple(_VTAB_SPEC)
# The image-list files of one dataset folder, by role.
VTAB_LISTS = ("train800", "val200", "train800val200", "test")
# Each protocol's lists as (train, select, report): "tune" searches hyper-parameters on val200, "final"
# trains on all 1,000 examples and reports test.
VTAB_PROTOCOLS = {"tune": ("train800", "val200", "val200"), "final": ("train800val200", "test", "test")}

SQUAD_HUB_ID = {"v1": "rajpurkar/squad", "v2": "rajpurkar/squad_v2"}
# answers: {"text": [...], "answer_start": [...]}; both empty for SQuAD 2.0's unanswerable questions
SQUAD_COLUMNS = ("id", "title", "context", "question", "answers")
SQUAD_VERSIONS = tuple(SQUAD_HUB_ID)
