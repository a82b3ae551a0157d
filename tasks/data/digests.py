"""Content digests of dataset splits: what a run's data was, whatever its storage.

A split's digest hashes its rows (every column by name, values as JSON), so the hub's ``nyu-mll/glue``
and a ``save_to_disk`` copy of it carried to an offline cluster give the same digest, and a copy with one
row changed does not. ``make prefetch`` records the digests of the official splits it fetched
(``OFFICIAL``); a run on ``data.path`` records its splits' digests in result.json (``data_digest``), and
the tables name a copy whose digests match the record as a copy of the official splits.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
OFFICIAL = ROOT / "results" / "prefetch" / "digests.json"   # {"nyu-mll/glue/cola": {"train": ..., ...}}
_BATCH = 10_000


def split_digest(split: Any) -> str:
    """sha256 (16 hex digits) of a ``datasets.Dataset``'s rows, in order; storage and chunking do not
    enter (an Arrow file, a memory table, a selection of rows all hash their rows)."""
    h = hashlib.sha256()
    h.update(json.dumps(sorted(split.column_names)).encode())
    for batch in split.with_format("arrow").iter(batch_size=_BATCH):
        for row in batch.to_pylist():
            h.update(json.dumps(row, sort_keys=True, default=str, ensure_ascii=False).encode() + b"\n")
    return h.hexdigest()[:16]


def split_digests(raw: Any, splits: tuple[str, ...] | None = None) -> dict[str, str]:
    """{split: digest} for ``splits`` of a ``DatasetDict`` (all of them by default)."""
    return {name: split_digest(raw[name]) for name in (splits or tuple(raw))}


def official(path: Path | None = None) -> dict[str, dict[str, str]]:
    """What ``make prefetch`` recorded: {"<hub id>[/<config>]": {split: digest}}; {} before it ran."""
    path = path or OFFICIAL
    return json.loads(path.read_text()) if path.is_file() else {}


def record(found: dict[str, dict[str, str]], path: Path | None = None) -> None:
    """Merge ``found`` into the record, atomically (several prefetches add to one file)."""
    from tasks.files import write_text

    path = path or OFFICIAL
    merged = official(path) | found
    write_text(path, json.dumps(merged, indent=2, sort_keys=True) + "\n")


def copy_of(digests: dict[str, str] | None, record_: dict[str, dict[str, str]]) -> str | None:
    """The official dataset whose recorded splits ``digests`` (a run's splits) all equal, or None."""
    if not digests:
        return None
    for name, splits in record_.items():
        if all(splits.get(split) == value for split, value in digests.items()):
            return name
    return None
