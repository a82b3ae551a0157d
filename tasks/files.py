"""Atomic files: a reader, a crash or a kill never sees a half-written file.

The one helper the harness, reporting, demo and benchmarks use (results, checkpoint markers, adapters,
tables, figures). ``capaboost.save`` writes its one file the same way without importing this (the method
package stands alone), under the same temporary name, so the harness's clean-ups recognise both.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_SUFFIX = ".tmp"


def tmp_name(path: Path) -> Path:
    """Hidden, per-process, and recognisable, so a stale one left by a kill can be found and removed."""
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; it replaces ``path`` only if the block finishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    try:
        yield tmp
        with open(tmp, "rb") as f:  # data on disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))
