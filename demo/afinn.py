"""AFINN-165 (from the ``afinn`` pip package) as a GLUE-format regression task: the demo needs no hub.

The task is the lexicon's valence itself, in STS-B's schema (``nyu-mll/glue``, saved with
``DatasetDict.save_to_disk``) so the runner reads it through its ordinary ``data.path`` route:
sentence1 = the word or phrase, sentence2 = "" (the runner's GLUE loader reads sentence pairs; an
empty second sentence makes it a single-sentence regression), label = (valence + 5) / 2, i.e. -5..+5
mapped linearly onto STS-B's 0..5, idx. Regression of the value, not its sign: the sign (an SST-2
task) sits at a 93-94% ceiling for every arm and tells the arms apart no better than chance.

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

from tasks.files import write_text

LEXICON = "AFINN-en-165.txt"
SENTENCE2 = ""   # no second sentence: see the module docstring
TASK = "stsb"    # the runner finds <data.path>/stsb and applies STS-B's split protocol and metrics
FORMAT_VERSION = 2  # bump when the conversion changes: stale copies are then rebuilt


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


def label(valence: int) -> float:
    return (valence + 5) / 2.0


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


def to_glue(splits: dict[str, list[tuple[str, int]]]) -> Any:
    """A ``datasets.DatasetDict`` in nyu-mll/glue's STS-B features."""
    from datasets import Dataset, DatasetDict, Features, Value

    features = Features({"sentence1": Value("string"), "sentence2": Value("string"),
                         "label": Value("float32"), "idx": Value("int32")})
    return DatasetDict({name: Dataset.from_dict({"sentence1": [w for w, _ in rows],
                                                 "sentence2": [SENTENCE2] * len(rows),
                                                 "label": [label(v) for _, v in rows],
                                                 "idx": list(range(len(rows)))}, features=features)
                        for name, rows in splits.items()})


def stats(splits: dict[str, list[tuple[str, int]]]) -> dict[str, Any]:
    """Counts and label spread: printed by the demo so a skewed split is seen, not guessed."""
    out: dict[str, Any] = {}
    for name, rows in splits.items():
        labels = np.array([label(v) for _, v in rows])
        out[name] = {"words": len(rows), "label_mean": round(float(labels.mean()), 4),
                     "label_std": round(float(labels.std()), 4),
                     "valence_counts": dict(sorted(Counter(v for _, v in rows).items()))}
    return out


def _stamp(source: Path, seed: int, val_fraction: float) -> dict[str, Any]:
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    return {"source": source.name, "sha256": digest, "seed": seed, "val_fraction": val_fraction,
            "format_version": FORMAT_VERSION}


def ensure(root: Path | str, seed: int = 0, val_fraction: float = 0.2,
           source: Path | str | None = None) -> Path:
    """``root/stsb``: the converted dataset, (re)built if missing or stale; ``root`` is ``data.path``."""
    root = Path(root)
    source = Path(source) if source is not None else lexicon_path()
    stamp = _stamp(source, seed, val_fraction)
    target, info_file = root / TASK, root / "afinn.json"
    if info_file.is_file() and (target / "dataset_dict.json").is_file():
        try:
            if json.loads(info_file.read_text()).get("stamp") == stamp:
                return target
        except json.JSONDecodeError:
            pass  # a corrupt stamp means: rebuild
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar

    splits = split_words(read_lexicon(source), val_fraction, seed)
    root.mkdir(parents=True, exist_ok=True)
    disable_progress_bar()  # one tiny write: a progress bar would only clutter the demo's log
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{TASK}-", dir=root))
        to_glue(splits).save_to_disk(str(tmp / "data"))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp / "data", target)
        shutil.rmtree(tmp, ignore_errors=True)
    finally:
        enable_progress_bar()
    info = {"stamp": stamp, "stats": stats(splits)}
    write_text(info_file, json.dumps(info, indent=2, sort_keys=True) + "\n")
    return target


def load_info(root: Path | str) -> dict[str, Any]:
    return json.loads((Path(root) / "afinn.json").read_text())
