"""AFINN-165 (shipped by the ``afinn`` pip package) as GLUE-format datasets, so the demo needs no hub.

Two tasks over the same word split, saved with ``DatasetDict.save_to_disk`` in the hub's own
schema (``nyu-mll/glue``) so the runner reads them through its ordinary ``data.path`` route:

* ``sst2``: sentence = the word or phrase, label = 1 if valence > 0 else 0 (the 2 words of
  valence 0 have no sign and are left out), idx.
* ``stsb``: sentence1 = the word, sentence2 = the fixed anchor ``STSB_ANCHOR``, label =
  (valence + 5) / 2, i.e. -5..+5 mapped linearly onto STS-B's 0..5 "similarity to a very
  positive word" scale, idx.

The split is by word, stratified by valence and seeded, so no word is in two splits and both
splits see every valence level. The data are derived state: regenerated when missing or stale.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from capaboost.atomic import write_text

LEXICON = "AFINN-en-165.txt"
STSB_ANCHOR = "a very positive word"
FORMAT_VERSION = 1  # bump when the conversion changes: stale copies are then rebuilt
TASKS = ("sst2", "stsb")


def lexicon_path() -> Path:
    """The lexicon file inside the installed ``afinn`` package (no network, no copy in the repo)."""
    try:
        import afinn
    except ImportError as err:
        raise RuntimeError("the demo needs the `afinn` package (it is in requirements.txt): "
                           "run `make install`") from err
    path = Path(afinn.__file__).resolve().parent / "data" / LEXICON
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall the `afinn` package")
    return path


def read_lexicon(path: Path | str) -> list[tuple[str, int]]:
    """(word, valence) pairs in file order; malformed lines are an error, not silently skipped."""
    entries: list[tuple[str, int]] = []
    seen: set[str] = set()
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise ValueError(f"{path}:{lineno}: expected 'word<TAB>valence', got {line!r}")
        word, raw = parts[0].strip(), parts[1].strip()
        try:
            valence = int(raw)
        except ValueError as err:
            raise ValueError(f"{path}:{lineno}: valence {raw!r} is not an integer") from err
        if not -5 <= valence <= 5:
            raise ValueError(f"{path}:{lineno}: valence {valence} outside -5..+5")
        if word in seen:
            raise ValueError(f"{path}:{lineno}: duplicate entry {word!r}")
        seen.add(word)
        entries.append((word, valence))
    if not entries:
        raise ValueError(f"{path}: no entries")
    return entries


def stsb_label(valence: int) -> float:
    return (valence + 5) / 2.0


def sst2_label(valence: int) -> int | None:
    """1 positive, 0 negative, None for valence 0 (no sign: not an SST-2 example)."""
    return None if valence == 0 else int(valence > 0)


def split_words(entries: list[tuple[str, int]], val_fraction: float = 0.2,
                seed: int = 0) -> dict[str, list[tuple[str, int]]]:
    """Seeded split by word, stratified by valence (each level keeps its share in both splits)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    rng = np.random.default_rng(seed)
    by_level: dict[int, list[tuple[str, int]]] = {}
    for word, valence in entries:
        by_level.setdefault(valence, []).append((word, valence))
    train, val = [], []
    for level in sorted(by_level):
        group = by_level[level]
        order = rng.permutation(len(group))
        n_val = int(round(val_fraction * len(group)))
        val += [group[i] for i in order[:n_val]]
        train += [group[i] for i in order[n_val:]]
    # one more seeded shuffle so examples are not sorted by valence on disk
    train = [train[i] for i in rng.permutation(len(train))]
    val = [val[i] for i in rng.permutation(len(val))]
    return {"train": train, "validation": val}


def to_glue(splits: dict[str, list[tuple[str, int]]]) -> dict[str, Any]:
    """The two ``datasets.DatasetDict`` objects, in nyu-mll/glue's features."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    sst2_features = Features({"sentence": Value("string"),
                              "label": ClassLabel(names=["negative", "positive"]), "idx": Value("int32")})
    stsb_features = Features({"sentence1": Value("string"), "sentence2": Value("string"),
                              "label": Value("float32"), "idx": Value("int32")})
    sst2, stsb = {}, {}
    for name, rows in splits.items():
        signed = [(w, sst2_label(v)) for w, v in rows if sst2_label(v) is not None]
        sst2[name] = Dataset.from_dict({"sentence": [w for w, _ in signed], "label": [y for _, y in signed],
                                        "idx": list(range(len(signed)))}, features=sst2_features)
        stsb[name] = Dataset.from_dict({"sentence1": [w for w, _ in rows],
                                        "sentence2": [STSB_ANCHOR] * len(rows),
                                        "label": [stsb_label(v) for _, v in rows],
                                        "idx": list(range(len(rows)))}, features=stsb_features)
    return {"sst2": DatasetDict(sst2), "stsb": DatasetDict(stsb)}


def stats(splits: dict[str, list[tuple[str, int]]]) -> dict[str, Any]:
    """Counts and label balance: printed by the demo so a skewed split is seen, not guessed."""
    out: dict[str, Any] = {}
    for name, rows in splits.items():
        signed = [sst2_label(v) for _, v in rows if v != 0]
        out[name] = {"words": len(rows), "sst2_examples": len(signed),
                     "sst2_positive_fraction": round(sum(signed) / max(1, len(signed)), 4),
                     "stsb_label_mean": round(float(np.mean([stsb_label(v) for _, v in rows])), 4),
                     "valence_counts": dict(sorted(Counter(v for _, v in rows).items()))}
    return out


def _stamp(source: Path, seed: int, val_fraction: float) -> dict[str, Any]:
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    return {"source": source.name, "sha256": digest, "seed": seed, "val_fraction": val_fraction,
            "format_version": FORMAT_VERSION, "stsb_anchor": STSB_ANCHOR}


def ensure(root: Path | str, seed: int = 0, val_fraction: float = 0.2,
           source: Path | str | None = None) -> dict[str, Path]:
    """``{task: root/task}``: the converted datasets, (re)built if missing or stale.

    ``root`` is what the runner takes as ``data.path`` for both tasks (it looks in ``<path>/<task>``),
    so the two tasks of one method share a config and land in one table row.
    """
    root = Path(root)
    source = Path(source) if source is not None else lexicon_path()
    stamp = _stamp(source, seed, val_fraction)
    dirs = {task: root / task for task in TASKS}  # the runner finds <data.path>/<task> by itself
    info_file = root / "afinn.json"
    if info_file.is_file() and all((d / "dataset_dict.json").is_file() for d in dirs.values()):
        try:
            if json.loads(info_file.read_text()).get("stamp") == stamp:
                return dirs
        except json.JSONDecodeError:
            pass  # a corrupt stamp means: rebuild
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar

    splits = split_words(read_lexicon(source), val_fraction, seed)
    root.mkdir(parents=True, exist_ok=True)
    disable_progress_bar()  # two tiny writes: a progress bar would only clutter the demo's log
    try:
        for task, dataset in to_glue(splits).items():
            tmp = Path(tempfile.mkdtemp(prefix=f".{task}-", dir=root))
            dataset.save_to_disk(str(tmp / "data"))
            if dirs[task].exists():
                shutil.rmtree(dirs[task])
            os.replace(tmp / "data", dirs[task])
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        enable_progress_bar()
    _write_json(info_file, {"stamp": stamp, "stats": stats(splits)})
    return dirs


def load_info(root: Path | str) -> dict[str, Any]:
    return json.loads((Path(root) / "afinn.json").read_text())


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
