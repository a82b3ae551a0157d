"""A run's result.json as re-runs meet it: reused (the asking sweep's name added), set aside when torn,
discarded by ``force`` once per launch, and told which sweeps found the run held while it trained.

No torch here: ``make status`` reads runs with it on a login node.

- *Torn.* A result.json that is empty, truncated, not UTF-8 or not a JSON object is not a finished run:
  it is moved aside (``result.json.torn-<time>``) with one line, and the run resumes from its
  checkpoints.
- *force.* ``force=true`` discards a finished result (and that run's checkpoints and W&B files) and
  records the launch in ``forced.json``; a SLURM requeue of the same launch repeats its command line,
  so the same job id never discards again, and a run with no finished result always resumes.
- *Shared runs.* A sweep whose run is held by a live trainer leaves its name in ``sweeps.pending/``;
  the holder merges those names into ``sweeps`` when it writes result.json, and re-reads them after
  writing (a name left after that read finds the result.json and adds itself under the lock).
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from tasks import result as schema
from tasks.cluster import runlock
from tasks.files import write_text
from tasks.result import CHECKPOINTS, FORCED, PENDING, RESULT, WANDB_DIR, WANDB_ID, to_json

READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


class Torn(ValueError):
    """result.json exists but is not a finished result."""


def load(path: Path) -> dict[str, Any] | None:
    """The result at ``path``; None if there is none; Torn (naming why) if it cannot be one.

    Finished means a complete JSON object, not a valid one of this schema (``tasks.result.problem``, which
    ``make tables`` applies): a reader made stricter, or a file of a newer schema, must never make a
    re-run train a finished run again."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        result = schema.parse(data)
    except ValueError as error:
        raise Torn(str(error)) from None
    if not isinstance(result, dict):
        raise Torn(f"a JSON {type(result).__name__}, not an object")
    return result


def read(path: Path, set_aside: bool = False) -> dict[str, Any] | None:
    """The finished result, or None (none, or torn). ``set_aside`` (run lock held): move a torn one
    beside it, with one line, so the run continues from its checkpoints."""
    try:
        return load(path)
    except Torn as torn:
        if set_aside:
            aside = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%dT%H%M%S')}")
            os.replace(path, aside)
            print(f"{path} was unreadable ({torn}): moved to {aside.name}; the run continues from its "
                  "checkpoints")
        return None


def reuse(path: Path, sweep: str | None, locked: bool = False) -> dict[str, Any]:
    """A finished run asked for again trains nothing. A sweep that reuses it is added to its ``sweeps``
    (so that sweep's tables find it); otherwise only the mtime moves, so "results newer than this
    command" (a sweep re-run, the contract's cli-smoke) include results that were already there. On a
    read-only disk neither can be written, and the result is returned as it is.

    The append is a read-modify-write: it holds the run lock (``locked``: the caller already does),
    so two sweeps reusing one run at once both end up in the file.
    """
    result = load(path)
    assert result is not None, path
    pending = _pending(path.parent)
    if (not sweep or sweep in result.get("sweeps", [])) and not pending:
        try:
            os.utime(path)
        except OSError as error:
            if error.errno not in READ_ONLY:
                raise
        return result
    try:
        lock = None if locked else runlock.acquire(path.parent, wait=True, poll_s=0.5)
    except OSError as error:
        if error.errno not in READ_ONLY:
            raise
        print(f"{path.parent} is read-only: sweep {sweep} not added to its result.json")
        return result
    try:
        result = load(path) or result  # again, under the lock
        if merge(result, path.parent, [sweep] if sweep else []):
            write_text(path, to_json(result))  # unchecked: the file as it was, plus the sweep names
        clear_pending(path.parent, result["sweeps"])
    finally:
        if lock is not None:
            lock.release()
    return result


# --- sweeps that found the run held ----------------------------------------------------------------------

def record_pending(run_dir: Path, sweep: str) -> None:
    """Leave ``sweep``'s name for the trainer that holds the run (one file per name: no races)."""
    folder = run_dir / PENDING
    folder.mkdir(parents=True, exist_ok=True)
    (folder / sweep).touch()


def _pending(run_dir: Path) -> list[str]:
    folder = run_dir / PENDING
    return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


def merge(result: dict[str, Any], run_dir: Path, sweeps: list[str]) -> bool:
    """Add ``sweeps`` and every name pending in ``run_dir`` to ``result["sweeps"]``; True if it changed."""
    names = result.setdefault("sweeps", [])
    new = [s for s in [*sweeps, *_pending(run_dir)] if s and s not in names]
    names.extend(dict.fromkeys(new))
    return bool(new)


def clear_pending(run_dir: Path, merged: list[str]) -> None:
    for name in merged:
        (run_dir / PENDING / name).unlink(missing_ok=True)
    try:
        (run_dir / PENDING).rmdir()
    except OSError:
        pass  # absent, or a name arrived meanwhile (kept for the next merge)


def write(path: Path, result: dict[str, Any]) -> None:
    """Write a finished result (run lock held; tasks.result.write: checked, strict, atomic), with every
    pending sweep name, then settle late ones."""
    merge(result, path.parent, [])
    schema.write(path, result)
    if merge(result, path.parent, []):  # a name recorded while the file was written
        schema.write(path, result)
    clear_pending(path.parent, result["sweeps"])


# --- force -----------------------------------------------------------------------------------------------

def forced_by_this_launch(run_dir: Path) -> bool:
    """True for a requeued job whose launch already discarded the old result (force acts once)."""
    here = runlock.slurm_job()  # what a requeue keeps; None from a shell
    try:
        return here is not None and json.loads((run_dir / FORCED).read_text()).get("launch") == here
    except (OSError, ValueError, AttributeError):
        return False


def discard_for_force(run_dir: Path) -> bool:
    """``force=true`` (run lock held): a finished (or torn) result goes, with its checkpoints and W&B
    files, and the launch is recorded; a run without one keeps its checkpoints (they are this launch's,
    or an unfinished run's) and resumes. True if something was discarded."""
    result = run_dir / RESULT
    if not result.exists():
        return False
    for stale in (result, run_dir / CHECKPOINTS, run_dir / WANDB_DIR, run_dir / WANDB_ID):
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.exists():
            stale.unlink()
    record = {"launch": runlock.slurm_job(), "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_text(run_dir / FORCED, json.dumps(record) + "\n")
    print(f"force=true: discarded the finished result of {run_dir}; training it again from step 0")
    return True
