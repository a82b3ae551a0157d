"""Load GLUE / SQuAD / VTAB-1k from the hub, a local copy or the fixtures, and apply the paper's protocols.

Every loader returns a ``DatasetDict`` with "train" (what we fit), "select" (what picks the best epoch)
and "report" (what result.json reports), plus "report_mismatched" for MNLI.

GLUE protocols (LINs-lab/CapaBoost ``run_glue.py`` for "split", ``run_glue_no_test.py`` for "dev"):

- "split", CoLA/RTE/MRPC/STS-B: a seed-42 permutation of the dev set; its first ``len // 2`` indices are
  "select", the rest "report"; train is the full train split.
- "split", SST-2/QQP/QNLI/MNLI: a seed-42 permutation of the train split; its first 1,000 indices are
  "select", the rest (in permutation order) are "train"; "report" is the full dev set (MNLI: matched).
- "dev": train on the full train split; select = report = the dev set.

The permutation is the official one, ``torch.randperm(n, generator=torch.Generator().manual_seed(seed))``
(not ``datasets.shuffle``, which uses numpy and gives a different order); it matches the official split
exactly as long as torch's CPU ``randperm`` algorithm is unchanged since the official torch version (not
checkable offline). ``seed`` is the DATA seed: keep it 42 to reproduce the paper's splits whatever the
training seed is. Splits keep the permutation order, as the official ``Dataset.select(indices)`` did.
Tiny train sets (fixtures) hold out ``min(1000, len(train) // 4)`` examples instead of 1,000.

Local copies (``source`` = a path): for GLUE a ``save_to_disk`` DatasetDict with the hub's splits and
columns, or the original GLUE TSV folder (``train.tsv``, ``dev.tsv``; MNLI ``dev_matched.tsv`` and
``dev_mismatched.tsv``), given directly or as the parent of ``<task>/`` (e.g. ``cola/``) or of the GLUE
download's folder name (``CoLA/``, ``SST-2/``, ``STS-B/``, ...). For SQuAD a ``save_to_disk`` DatasetDict
or the official JSON files, directly or under ``squad/``, ``squad_v2/``, ``v1/`` or ``v2/``. TSV and JSON
are parsed once and kept as Arrow in the datasets cache (``tasks.data.cache``), so their tokenisation is
cached like hub data's.

``train_limit`` (the paper's 10k SST-2 ablation) keeps the first N training examples in a seeded order: for
the large tasks under "split" the train split is already in permutation order, so this equals the official
``--max_train_samples`` (``select(range(N))`` after the hold-out); otherwise we apply the seeded permutation
first (the official script would have taken the first N rows unshuffled).
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import datasets
import torch

from tasks.data import fixtures
from tasks.data.original_formats import glue_local, is_saved_dict, read_glue_tsv, squad_local
from tasks.data.vtab_folders import dataset_folder, load_vtab
from tasks.facts import glue, squad, vtab
from tasks.facts.glue import GLUE, SELECT_HOLDOUT

__all__ = ["load_glue", "load_squad", "load_vtab", "load_math", "permutation", "apply_glue_protocol",
           "read_glue_tsv", "raw_dataset", "read_splits", "path_digests", "GLUE_PROTOCOLS", "SELECT_HOLDOUT"]

log = logging.getLogger(__name__)

GLUE_PROTOCOLS = glue.PROTOCOLS  # tasks.facts.glue holds these two; named here for this module's users


def permutation(n: int, seed: int) -> list[int]:
    """The official split RNG: torch's CPU ``randperm`` under a fresh generator seeded with ``seed``."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()


def holdout_size(n_train: int) -> int:
    """1,000 as in the paper; capped at a quarter of train so tiny (fixture) train sets keep most data."""
    return min(SELECT_HOLDOUT, n_train // 4)


# --- validation ----------------------------------------------------------------------------------------

def _check_common(seed: Any, train_limit: Any, source: Any) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if train_limit is not None and (isinstance(train_limit, bool) or not isinstance(train_limit, int)
                                    or train_limit < 1):
        raise ValueError(f"train_limit must be None or a positive int, got {train_limit!r}")
    if not isinstance(source, str | Path) or not str(source):
        raise ValueError(f"source must be 'hub', 'fixture' or a local path, got {source!r}")
    if str(source) not in ("hub", "fixture") and not Path(source).exists():
        raise ValueError(f"source: local path {str(source)!r} does not exist (or use 'hub' / 'fixture')")


def _require(raw: datasets.DatasetDict, splits: tuple[str, ...], columns: tuple[str, ...],
             where: str) -> None:
    missing = [s for s in splits if s not in raw]
    if missing:
        raise ValueError(f"{where}: missing split(s) {missing}; found {sorted(raw)}")
    for split in splits:
        absent = [c for c in columns if c not in raw[split].column_names]
        if absent:
            raise ValueError(f"{where}: split {split!r} lacks column(s) {absent}; "
                             f"has {raw[split].column_names}")


def _limit(train: datasets.Dataset, train_limit: int | None, seed: int, permuted: bool) -> datasets.Dataset:
    if train_limit is None or train_limit >= len(train):
        return train
    order = range(len(train)) if permuted else permutation(len(train), seed)
    return train.select(list(order)[:train_limit])


# --- GLUE ----------------------------------------------------------------------------------------------

def _glue_raw(task: str, source: str | Path) -> datasets.DatasetDict:
    if source == "hub":
        return datasets.load_dataset(glue.HUB_ID, task)
    if source == "fixture":
        return fixtures.glue_raw(task)
    return glue_local(task, Path(source))


def _check_glue(task: str, protocol: str, seed: Any, train_limit: Any, source: Any) -> None:
    """Once per public call, before any download or file read (the loaders are usable on their own)."""
    if task not in GLUE:
        raise ValueError(f"task must be one of {sorted(GLUE)}, got {task!r}")
    if protocol not in GLUE_PROTOCOLS:
        raise ValueError(f"protocol must be one of {GLUE_PROTOCOLS}, got {protocol!r}")
    _check_common(seed, train_limit, source)


def apply_glue_protocol(task: str, raw: datasets.DatasetDict, protocol: str = "split", seed: int = 42,
                        train_limit: int | None = None) -> datasets.DatasetDict:
    """Hub-shaped GLUE (train + dev splits) -> train/select/report(/report_mismatched), see module doc."""
    _check_glue(task, protocol, seed, train_limit, "fixture")
    return _glue_protocol(task, raw, protocol, seed, train_limit)


def _glue_protocol(task: str, raw: datasets.DatasetDict, protocol: str, seed: int,
                   train_limit: int | None) -> datasets.DatasetDict:
    schema = GLUE[task]
    _require(raw, ("train", *schema.dev_splits),
             tuple(k for k in schema.keys if k is not None) + ("label",), f"GLUE {task}")
    train, dev = raw["train"], raw[schema.dev_splits[0]]
    permuted = False
    if protocol == "dev":
        select = report = dev
    elif task in glue.LARGE:
        order = permutation(len(train), seed)
        k = holdout_size(len(train))
        if k < SELECT_HOLDOUT:
            log.info("GLUE %s: only %d training examples; holding out %d (not %d) for selection",
                        task, len(train), k, SELECT_HOLDOUT)
        select, train, report, permuted = train.select(order[:k]), train.select(order[k:]), dev, True
    else:
        order = permutation(len(dev), seed)
        half = len(dev) // 2
        select, report = dev.select(order[:half]), dev.select(order[half:])
    out = {"train": _limit(train, train_limit, seed, permuted), "select": select, "report": report}
    if len(schema.dev_splits) > 1:
        out["report_mismatched"] = raw[schema.dev_splits[1]]
    return datasets.DatasetDict(out)


def load_glue(task: str, source: str | Path = "hub", protocol: str = "split", seed: int = 42,
              train_limit: int | None = None) -> datasets.DatasetDict:
    """GLUE ``task`` from ``source`` ("hub" | "fixture" | local path) under ``protocol`` ("split" | "dev")."""
    _check_glue(task, protocol, seed, train_limit, source)
    return _glue_protocol(task, _glue_raw(task, source), protocol, seed, train_limit)


# --- SQuAD ---------------------------------------------------------------------------------------------

def load_squad(version: str, source: str | Path = "hub", seed: int = 42,
               train_limit: int | None = None) -> datasets.DatasetDict:
    """SQuAD v1.1 / v2.0. The paper reports the dev set and selects on it: select = report = validation."""
    if version not in squad.VERSIONS:
        raise ValueError(f"version must be one of {squad.VERSIONS}, got {version!r}")
    _check_common(seed, train_limit, source)
    if source == "hub":
        raw = datasets.load_dataset(squad.HUB_ID[version])
    elif source == "fixture":
        raw = fixtures.squad_raw(version)
    else:
        raw = squad_local(version, Path(source))
    _require(raw, ("train", "validation"), squad.COLUMNS, f"SQuAD {version}")
    return datasets.DatasetDict({"train": _limit(raw["train"], train_limit, seed, permuted=False),
                                 "select": raw["validation"], "report": raw["validation"]})


# --- MetaMathQA -> GSM8K (PEFT's decoder benchmark, tasks/facts/math.py) ---------------------------

def _math_local(root: Path, name: str) -> datasets.DatasetDict:
    from tasks.facts.math import LOCAL_FOLDERS, local_problem

    for folder in LOCAL_FOLDERS[name]:
        if is_saved_dict(root / folder):
            return datasets.load_from_disk(str(root / folder))
    raise ValueError(local_problem(str(root)))


def load_math(source: str | Path = "hub", train_limit: int | None = None) -> datasets.DatasetDict:
    """train = MetaMathQA "train" after PEFT's length filter (query, response); select = the 50 GSM8K
    train questions PEFT validates on; report = GSM8K "test". GSM8K's question/answer are renamed
    query/response, as PEFT does (data.py:66). ``source``: "hub", "fixture", or a directory holding
    ``metamathqa/`` and ``gsm8k/`` (save_to_disk copies of the hub datasets)."""
    from tasks.facts import math as mp

    _check_common(0, train_limit, source)
    if source == "hub":
        metamath = datasets.load_dataset(mp.METAMATHQA_HUB_ID)
        gsm8k = datasets.load_dataset(mp.GSM8K_HUB_ID, mp.GSM8K_CONFIG)
    elif source == "fixture":
        metamath, gsm8k = fixtures.metamathqa_raw(), fixtures.gsm8k_raw()
    else:
        metamath, gsm8k = _math_local(Path(source), "metamathqa"), _math_local(Path(source), "gsm8k")
    _require(metamath, ("train",), mp.METAMATHQA_COLUMNS, "MetaMathQA")
    _require(gsm8k, ("train", "test"), mp.GSM8K_COLUMNS, "GSM8K")
    train = metamath["train"]
    train = train.select(mp.keep_indices(train["query"], train["response"]))
    if train_limit is not None:
        train = train.select(range(min(train_limit, len(train))))  # PEFT reads it unshuffled: the first N
    gsm8k = gsm8k.rename_columns({"question": "query", "answer": "response"})
    return datasets.DatasetDict({
        "train": train.select_columns(["query", "response"]),
        "select": gsm8k["train"].select(mp.valid_indices(len(gsm8k["train"]))).select_columns(
            ["query", "response"]),
        "report": gsm8k["test"].select_columns(["query", "response"])})


# --- what a run reads, before any protocol: for make prefetch and the digests of data.path ------------

def read_splits(family: str, dataset: str) -> tuple[str, ...]:
    """The raw splits a GLUE / SQuAD run reads (the hub's test splits never are)."""
    return ("train", *GLUE[dataset].dev_splits) if family == "glue" else ("train", "validation")


def raw_dataset(family: str, dataset: str, source: str | Path) -> datasets.DatasetDict:
    """GLUE ``dataset`` or SQuAD ``dataset`` ("v1" | "v2") as the hub, a local copy or the fixtures give it,
    with the hub's split names, before any protocol (what ``make prefetch`` fetches)."""
    if family == "glue":
        return _glue_raw(dataset, source)
    if source == "hub":
        return datasets.load_dataset(squad.HUB_ID[dataset])
    return fixtures.squad_raw(dataset) if source == "fixture" else squad_local(dataset, Path(source))


def path_digests(family: str, dataset: str, protocol: str, path: str) -> dict[str, str]:
    """Content digest of each split a run on ``data.path`` reads (``tasks.data.digests``); VTAB-1k: of each
    image list file (the images are named by the lists)."""
    from tasks.data.digests import split_digests

    if family == "vtab":
        folder = dataset_folder(dataset, Path(path))
        return {split: hashlib.sha256((folder / f"{split}.txt").read_bytes()).hexdigest()[:16]
                for split in dict.fromkeys(vtab.PROTOCOLS[protocol])}
    return split_digests(raw_dataset(family, dataset, path), read_splits(family, dataset))
