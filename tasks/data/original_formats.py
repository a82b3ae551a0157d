"""The original downloads users carry to offline clusters (GLUE TSV folders, SQuAD JSON files), read as
the hub datasets' splits and columns so every loader downstream sees one schema."""
from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets

from tasks.data import fixtures
from tasks.facts.tables import GLUE, SQUAD_COLUMNS

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class _Tsv:
    """How one task's original GLUE TSV maps onto the hub columns."""
    folder: str                       # directory name in the GLUE download
    header: bool
    columns: tuple[str | int, ...]    # TSV column (name or index) for each hub text column
    label: str | int
    labels: tuple[str, ...] | None    # TSV label strings in hub id order; None = float (STS-B)


_BINARY = ("0", "1")
_TSV = {
    "cola": _Tsv("CoLA", False, (3,), 1, _BINARY),
    "sst2": _Tsv("SST-2", True, ("sentence",), "label", _BINARY),
    "mrpc": _Tsv("MRPC", True, ("#1 String", "#2 String"), "Quality", _BINARY),
    "qqp": _Tsv("QQP", True, ("question1", "question2"), "is_duplicate", _BINARY),
    "stsb": _Tsv("STS-B", True, ("sentence1", "sentence2"), "score", None),
    "mnli": _Tsv("MNLI", True, ("sentence1", "sentence2"), "gold_label",
                 ("entailment", "neutral", "contradiction")),
    "qnli": _Tsv("QNLI", True, ("question", "sentence"), "label", ("entailment", "not_entailment")),
    "rte": _Tsv("RTE", True, ("sentence1", "sentence2"), "label", ("entailment", "not_entailment")),
}
_TSV_FILES = {"train": "train.tsv", "validation": "dev.tsv",
              "validation_matched": "dev_matched.tsv", "validation_mismatched": "dev_mismatched.tsv"}


def _glue_features(task: str) -> datasets.Features:
    schema = GLUE[task]
    features = {k: datasets.Value("string") for k in schema.keys if k is not None}
    features["label"] = (datasets.Value("float32") if schema.is_regression
                         else datasets.ClassLabel(names=list(schema.label_names)))
    features["idx"] = datasets.Value("int32")
    return datasets.Features(features)


def _column_index(column: str | int, header: list[str] | None, path: Path) -> int:
    if isinstance(column, int):
        return column
    if header is None or column not in header:
        raise ValueError(f"{path}: no column {column!r} in header {header}")
    return header.index(column)


def _read_tsv(task: str, path: Path) -> datasets.Dataset:
    keys = [k for k in GLUE[task].keys if k is not None]
    rows: dict[str, list] = {k: [] for k in keys} | {"label": [], "idx": []}
    # QUOTE_NONE: GLUE sentences contain unbalanced quotes; utf-8-sig: MRPC's header starts with a BOM.
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            _read_rows(task, path, csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE), rows)
    except UnicodeDecodeError as error:  # names the file: the codec's message names only a position
        raise ValueError(f"{path}: not UTF-8 text (byte 0x{error.object[error.start]:02x}: {error.reason})"
                         ) from None
    if not rows["idx"]:
        raise ValueError(f"{path}: no rows read")
    return datasets.Dataset.from_dict(rows, features=_glue_features(task))


def _read_rows(task: str, path: Path, reader: Iterator[list[str]], rows: dict[str, list]) -> None:
    spec, keys = _TSV[task], [k for k in GLUE[task].keys if k is not None]
    skipped = 0
    header = next(reader, []) if spec.header else None
    where = {c: _column_index(c, header, path) for c in (*spec.columns, spec.label)}
    width = max(where.values()) + 1
    for line_no, row in enumerate(reader, start=2 if spec.header else 1):
        if len(row) < width:
            skipped += 1  # a handful of QQP lines are truncated in the original release
            continue
        raw_label = row[where[spec.label]].strip()
        if spec.labels is None:
            try:
                label: float | int = float(raw_label)
            except ValueError:
                raise ValueError(f"{path}:{line_no}: score {raw_label!r} is not a number") from None
        elif raw_label in spec.labels:
            label = spec.labels.index(raw_label)
        else:
            raise ValueError(f"{path}:{line_no}: label {raw_label!r} not in {spec.labels}")
        for key, column in zip(keys, spec.columns, strict=True):
            rows[key].append(row[where[column]])
        rows["label"].append(label)
        rows["idx"].append(len(rows["idx"]))
    if skipped:
        log.warning("%s: skipped %d malformed line(s)", path, skipped)


def read_glue_tsv(task: str, directory: str | Path) -> datasets.DatasetDict:
    """The original GLUE download (one task folder) as the hub's DatasetDict (no test splits)."""
    directory = Path(directory)
    splits = {}
    for split in ("train", *GLUE[task].dev_splits):
        path = directory / _TSV_FILES[split]
        if not path.is_file():
            raise ValueError(f"source: {path} not found (GLUE TSV layout for {task})")
        splits[split] = _read_tsv(task, path)
    return datasets.DatasetDict(splits)


_SQUAD_JSON = {"v1": ("train-v1.1.json", "dev-v1.1.json"), "v2": ("train-v2.0.json", "dev-v2.0.json")}


def _read_squad_json(path: Path) -> datasets.Dataset:
    """The official SQuAD JSON (data -> paragraphs -> qas) flattened to the hub's columns."""
    rows: dict[str, list] = {c: [] for c in SQUAD_COLUMNS}
    try:
        articles = json.loads(path.read_text(encoding="utf-8"))["data"]
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not SQuAD JSON ({type(error).__name__}: "
                         f"{' '.join(str(error).split())[:150]})") from None
    for article in articles:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answers = [] if qa.get("is_impossible") else qa["answers"]
                rows["id"].append(qa["id"])
                rows["title"].append(article.get("title", ""))
                rows["context"].append(paragraph["context"])
                rows["question"].append(qa["question"])
                rows["answers"].append({"text": [a["text"] for a in answers],
                                        "answer_start": [int(a["answer_start"]) for a in answers]})
    return datasets.Dataset.from_dict(rows, features=fixtures.squad_raw("v1")["train"].features)


def squad_json(train: Path, dev: Path) -> datasets.DatasetDict:
    return datasets.DatasetDict({"train": _read_squad_json(train), "validation": _read_squad_json(dev)})


