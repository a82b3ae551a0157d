"""The local copies users carry to offline clusters (a ``save_to_disk`` folder, or the original downloads:
GLUE TSV folders, SQuAD JSON files), found under a data path and read as the hub datasets' splits and
columns so every loader downstream sees one schema. The TSV and JSON files are parsed once and kept as
Arrow in the datasets cache (``tasks.data.cache``)."""
from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import datasets

from tasks.data import features
from tasks.data.cache import cached
from tasks.facts import squad
from tasks.facts.glue import GLUE

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


def is_saved_dict(path: Path) -> bool:
    """A ``DatasetDict.save_to_disk`` folder."""
    return (path / "dataset_dict.json").is_file()


def glue_local(task: str, root: Path) -> datasets.DatasetDict:
    """A save_to_disk dir or GLUE TSV dir, given directly or as the parent of ``<task>``/``<GLUE folder>``
    (the GLUE download's folder name: ``CoLA/``, ``SST-2/``, ``STS-B/``, ...)."""
    for candidate in (root, root / task, root / _TSV[task].folder):
        if is_saved_dict(candidate):
            return datasets.load_from_disk(str(candidate))
        if (candidate / "train.tsv").is_file():
            files = [candidate / _TSV_FILES[split] for split in ("train", *GLUE[task].dev_splits)]
            return cached(f"glue-{task}", files, partial(read_glue_tsv, task, candidate))
    raise ValueError(f"source: {root} holds neither a save_to_disk DatasetDict nor GLUE TSVs for {task} "
                     f"(looked in ., {task}/, {_TSV[task].folder}/)")


def squad_local(version: str, root: Path) -> datasets.DatasetDict:
    """A save_to_disk dir or the official JSON files, directly or under the hub name's folder
    (``squad/``, ``squad_v2/``) or ``v1/`` / ``v2/``."""
    hub_name = squad.HUB_ID[version].split("/")[-1]
    for candidate in (root, root / hub_name, root / version):
        if is_saved_dict(candidate):
            return datasets.load_from_disk(str(candidate))
        train_json, dev_json = (candidate / name for name in squad.JSON_FILES[version])
        if train_json.is_file() and dev_json.is_file():
            files = [train_json, dev_json]
            return cached(f"squad-{version}", files, partial(squad_json, *files))
    raise ValueError(f"source: {root} holds neither a save_to_disk DatasetDict nor "
                     f"{squad.JSON_FILES[version]} (looked in ., {hub_name}/, {version}/)")


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
    return datasets.Dataset.from_dict(rows, features=features.glue(task))


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


def _read_squad_json(path: Path) -> datasets.Dataset:
    """The official SQuAD JSON (data -> paragraphs -> qas) flattened to the hub's columns."""
    rows: dict[str, list] = {c: [] for c in squad.COLUMNS}
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
    return datasets.Dataset.from_dict(rows, features=features.squad())


def squad_json(train: Path, dev: Path) -> datasets.DatasetDict:
    return datasets.DatasetDict({"train": _read_squad_json(train), "validation": _read_squad_json(dev)})


