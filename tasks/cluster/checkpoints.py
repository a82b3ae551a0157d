"""Which checkpoint a restarted run resumes from, and the marker that says a checkpoint is whole.

The stock Trainer writes a checkpoint's files one after another, none of them atomically, and a kill or
a full disk can stop it anywhere (a 0-byte ``trainer_state.json`` included). So a checkpoint counts as
complete only once ``MARKER`` exists: written atomically after every file, it records each file's size
and sha256 (checkpoints hold only the trainable tensors and their optimizer state, so hashing costs
milliseconds). A resume takes the newest checkpoint whose files still match their marker, removes the
ones that do not (the Trainer would otherwise write into them), and says which file was bad.

Older checkpoints are deleted here, after the new marker is written, never by the Trainer (whose
rotation runs before any callback): the last good checkpoint is never the one removed.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from tasks import result as schema
from tasks.cluster import distributed
from tasks.files import TMP_SUFFIX, write_text

CHECKPOINTS = schema.CHECKPOINTS
MARKER = "checkpoint_complete.json"


def _step(folder: Path) -> int | None:
    tail = folder.name.rsplit("-", 1)[-1]
    return int(tail) if folder.name.startswith(f"{PREFIX_CHECKPOINT_DIR}-") and tail.isdigit() else None


def newest_first(directory: Path) -> list[Path]:
    """Checkpoint folders, newest (highest step) first."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and _step(p) is not None]
    return sorted(found, key=_step, reverse=True)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_marker(folder: Path, step: int) -> dict[str, Any]:
    """Record every file of a checkpoint the Trainer has finished writing; returns the marker."""
    files = {p.name: {"bytes": p.stat().st_size, "sha256": sha256(p)} for p in sorted(folder.iterdir())
             if p.is_file() and p.name != MARKER and not p.name.endswith(TMP_SUFFIX)}
    marker = {"step": step, "files": files}
    write_text(folder / MARKER, json.dumps(marker, indent=1) + "\n")
    return marker


def problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be resumed from (naming the file), or None when it is whole."""
    marker = folder / MARKER
    if not marker.is_file():
        return f"{marker} is missing (the save did not finish)"
    try:
        files = json.loads(marker.read_text())["files"]
        items = [(name, int(want["bytes"]), str(want["sha256"])) for name, want in files.items()]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"{marker} is unreadable ({type(error).__name__})"
    if "trainer_state.json" not in files:
        return f"{folder / 'trainer_state.json'} is not in its marker"
    for name, size, digest in items:
        path = folder / name
        try:
            got = path.stat().st_size
            if got != size:
                return f"{path} has {got} bytes, its marker recorded {size}"
            if sha256(path) != digest:
                return f"{path} does not match the sha256 its marker recorded"
        except OSError as error:
            return f"{path} is unreadable ({error.strerror or type(error).__name__})"
    return None


def last_complete_checkpoint(directory: Path) -> str | None:
    """The newest checkpoint whose files match its marker (read-only: nothing is removed)."""
    return next((str(p) for p in newest_first(directory) if problem(p) is None), None)


def resume_point(directory: Path) -> str | None:
    """The newest whole checkpoint; every broken one is removed, with one line naming its bad file.

    Call on one process only (rank 0), with the run lock held, before the Trainer starts.
    """
    folders = newest_first(directory)
    reasons = {folder: problem(folder) for folder in folders}
    chosen = next((folder for folder in folders if reasons[folder] is None), None)
    for folder in folders:
        if reasons[folder] is not None:
            shutil.rmtree(folder, ignore_errors=True)
            then = f"resuming from {chosen.name}" if chosen else "no complete one left: starting at step 0"
            print(f"checkpoint {folder.name} is unusable and was removed ({reasons[folder]}); {then}")
    return str(chosen) if chosen else None


def newest_marked(directory: Path) -> str | None:
    """The checkpoint ``resume_point`` chose, for the other DDP ranks (after rank 0 cleaned up)."""
    return next((str(p) for p in newest_first(directory) if (p / MARKER).is_file()), None)


def rotate(directory: Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest complete checkpoints, and any broken one older than those."""
    removed, kept = [], 0
    for folder in newest_first(directory):
        if kept < keep and (folder / MARKER).is_file():
            kept += 1
            continue
        if kept:  # only what is older than a complete checkpoint; a newer one may be mid-save
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


class CompleteCheckpoints(TrainerCallback):
    """Marks each checkpoint complete once every rank has written its files, then rotates.

    The marker waits for all ranks (DDP: each writes its own ``rng_state_<rank>.pth``); ``on_saved`` is
    called on the main process after it (tasks.cluster.lifecycle refreshes status.json there).
    """

    def __init__(self, keep: int | None, info: distributed.DistInfo,
                 on_saved: Callable[[int], None] | None = None) -> None:
        self.keep, self.info, self.on_saved = keep, info, on_saved

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        distributed.barrier(self.info)
        if self.info.is_main:
            root = Path(args.output_dir)
            write_marker(root / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}", state.global_step)
            if self.keep:
                rotate(root, self.keep)
            if self.on_saved is not None:
                self.on_saved(state.global_step)
        distributed.barrier(self.info)  # no rank exits (a preemption) before the marker is on disk
