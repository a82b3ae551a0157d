"""A run directory's own account of itself: ``status.json`` (running / preempted / failed / completed; a
run dir with status.json and no result.json has not finished), temporary files a kill left behind, and a
full disk turned into one line naming the disk."""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from tasks import result as schema
from tasks.cluster import runlock
from tasks.files import TMP_SUFFIX, write_text

STATUS = schema.STATUS
_STALE_TMP = re.compile(r"^\..+\.(\d+)" + re.escape(TMP_SUFFIX) + "$")   # tasks.files.tmp_name


class DiskFull(OSError):
    """A write failed for lack of space; the message names the disk (mount point) and the path."""


class Unwritable(OSError):
    """The run directory cannot be written (a read-only runs_root): one line, before any work."""


# --- status.json and stale files ------------------------------------------------------------------------

class Status:
    """status.json of one run: {"status", "host", "pid", "started", "updated", "slurm_job_id", ...}."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / STATUS
        self.base = {**runlock.this_process(), "started": _now()}
        # what a run that returns normally ends as ("diverged": tasks.training.divergence)
        self.outcome = "completed"

    def write(self, status: str, **extra: Any) -> None:
        """Atomically; on a full disk (no room for the temporary copy) in place, which reuses the old
        file's blocks; failing that, the status goes to stderr. Never raises: the error being reported
        (a full disk, say) must not be hidden behind this one."""
        text = json.dumps({"status": status, **self.base, "updated": _now(), **extra}, indent=1) + "\n"
        try:
            write_text(self.path, text)
            return
        except OSError:
            pass
        try:
            with open(self.path, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as error:
            print(f"could not write {self.path} ({error.strerror or error}); the run's status is {status}"
                  + (f": {extra['error']}" if extra.get("error") else ""), file=sys.stderr, flush=True)


def record_failure(run_dir: Path, error: BaseException) -> None:
    """A run that fails before training (device, DDP set-up): status.json says why, so ``make status``
    shows it failed instead of missing. Only with the run lock (never over a live trainer's status)."""
    try:
        lock = runlock.acquire(run_dir)
    except (runlock.RunLocked, OSError):
        return
    try:
        if not (run_dir / schema.RESULT).exists():
            message = " ".join(str(error).split())[:500]
            Status(run_dir).write("failed", error=f"{type(error).__name__}: {message}",
                                  stage="before training")
    finally:
        lock.release()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def clean_stale_tmp(run_dir: Path) -> list[Path]:
    """Remove ``.<name>.<pid>.tmp`` files a killed writer left (call with the run lock held)."""
    removed = []
    for path in run_dir.rglob(f"*{TMP_SUFFIX}"):
        if path.is_file() and _STALE_TMP.match(path.name) and "wandb" not in path.parts:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


# --- full disks ------------------------------------------------------------------------------------------

# How writers that do not raise OSError report a full disk: safetensors (Rust: "os error 28"), and
# torch.save (its C++ stream writer names no path and no errno).
_FULL_TEXT = ("No space left on device", "os error 28", "Disk quota exceeded", "os error 122")
_TORCH_WRITE = ("inline_container.cc", "PytorchStreamWriter", "basic_ios::clear", "iostream error")


def disk_full(error: BaseException, fallback: Path) -> DiskFull | None:
    """A one-line DiskFull for ENOSPC / a writer's failed write (safetensors, torch.save), else None."""
    text = str(error)
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        path = Path(error.filename) if error.filename else fallback
    elif any(t in text for t in _FULL_TEXT) or (isinstance(error, RuntimeError)
                                                and any(t in text for t in _TORCH_WRITE)):
        path = fallback
    else:
        return None
    mount = path if path.exists() else next((p for p in path.parents if p.exists()), Path("/"))
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    free = shutil.disk_usage(mount).free / 2**20
    first = text.strip().splitlines()[0][:200] if text.strip() else type(error).__name__
    return DiskFull(errno.ENOSPC, f"disk full (no space left on device, or quota): writing {path} failed "
                                  f"on the disk mounted at {mount} ({free:.0f} MiB free): {first}")


def writing_checkpoint(run_dir: Path) -> Path:
    """The checkpoint being written (the newest without a marker), for torch.save's pathless error."""
    from tasks.cluster.checkpoints import CHECKPOINTS, MARKER, newest_first

    return next((p for p in newest_first(run_dir / CHECKPOINTS) if not (p / MARKER).exists()), run_dir)
