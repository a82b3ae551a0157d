"""The hub datasets' column types (``datasets.Features``), built from the facts tables: the one schema
the fixtures, the original-download readers and the VTAB image lists all produce."""
from __future__ import annotations

import datasets

from tasks.facts.glue import GLUE
from tasks.facts.vtab import VTAB


def glue(task: str) -> datasets.Features:
    """``nyu-mll/glue``'s: the text columns, label (ClassLabel; STS-B float32), idx."""
    schema = GLUE[task]
    features = {k: datasets.Value("string") for k in schema.keys if k is not None}
    features["label"] = (datasets.Value("float32") if schema.is_regression
                         else datasets.ClassLabel(names=list(schema.label_names)))
    features["idx"] = datasets.Value("int32")
    return datasets.Features(features)


def squad() -> datasets.Features:
    """``rajpurkar/squad`` and ``rajpurkar/squad_v2``'s (tasks.facts.squad.COLUMNS)."""
    return datasets.Features({
        "id": datasets.Value("string"), "title": datasets.Value("string"),
        "context": datasets.Value("string"), "question": datasets.Value("string"),
        "answers": {"text": datasets.List(datasets.Value("string")),
                    "answer_start": datasets.List(datasets.Value("int32"))}})


def vtab(name: str) -> datasets.Features:
    """A VTAB-1k image list's: RGB image, class id."""
    return datasets.Features({"image": datasets.Image(mode="RGB"),
                              "label": datasets.ClassLabel(num_classes=VTAB[name].num_classes)})
