"""One run, one trainer: a lock file in the run directory that works on a cluster's shared filesystem.

fcntl/flock locks are unreliable over NFS, so the lock is a file created with ``os.link`` from a fully
written temporary file (atomic and exclusive on NFS too: a second creator gets EEXIST, and a reader never
sees it half-written). It names its holder (host, pid, start time, a random token); a daemon thread
touches it every ``HEARTBEAT_S``. A dead holder does not keep it: on the same host a pid that no longer
exists is stale, on another host a heartbeat older than ``stale_after_s``. Breaking a stale lock is
itself serialised by a short-lived second lock (``<lock>.break``), and the holder is re-read under it,
so two processes that both find the same stale lock cannot both take the run.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from capaboost.atomic import tmp_name

LOCK = "run.lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0    # other host: no heartbeat for this long means the holder is gone
BREAK_STALE_S = 60.0     # a breaker lock is held for milliseconds; one this old was left by a kill


class RunLocked(RuntimeError):
    """Another live process trains this run."""


def _create(path: Path, content: dict[str, Any]) -> bool:
    """Create ``path`` holding ``content`` if it does not exist; False if it does."""
    tmp = tmp_name(path)
    try:
        tmp.write_text(json.dumps(content))
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError as error:  # a filesystem without hard links: exclusive create instead
            if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(content))
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _read(path: Path) -> tuple[dict[str, Any], float] | None:
    """(holder, age of its heartbeat in s); None if the lock is gone. An unreadable lock (being written
    by the exclusive-create fallback) reads as an empty holder, judged by its age alone."""
    try:
        age = time.time() - path.stat().st_mtime
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(text)
    except ValueError:
        holder = {}
    return (holder if isinstance(holder, dict) else {}), age


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale(holder: dict[str, Any], age: float, stale_after_s: float = STALE_AFTER_S) -> str | None:
    """Why the holder is gone, or None while it may still be training."""
    pid = holder.get("pid")
    if holder.get("host") == socket.gethostname() and isinstance(pid, int):
        return None if _alive(pid) else f"pid {pid} on this host ({holder['host']}) no longer exists"
    if age > stale_after_s:
        return f"its heartbeat is {age:.0f} s old (> {stale_after_s:.0f} s)"
    return None


def describe(holder: dict[str, Any]) -> str:
    started = holder.get("started")
    since = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(started)) if started else ""
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}{since}"


class RunLock:
    """Held from ``acquire`` to ``release``; its heartbeat keeps it fresh while the run lives."""

    def __init__(self, path: Path, content: dict[str, Any], heartbeat_s: float) -> None:
        self.path, self.content = path, content
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat_s,), daemon=True,
                                        name="run-lock-heartbeat")
        self._thread.start()

    def owned(self) -> bool:
        found = _read(self.path)
        return found is not None and found[0].get("token") == self.content["token"]

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                if self.owned():
                    os.utime(self.path)
            except OSError:
                pass  # a full or briefly unreachable disk: the next beat tries again

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.owned():
            self.path.unlink(missing_ok=True)


def this_process() -> dict[str, Any]:
    """Who holds a lock or writes a status: host, pid and SLURM job (what a person needs to find it)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job_id": os.environ.get("SLURM_JOB_ID")}


def _break(path: Path, holder: dict[str, Any]) -> bool:
    """Remove the stale lock ``holder`` if it is still the one there; True if this process did."""
    breaker = path.with_name(path.name + ".break")
    if not _create(breaker, this_process()):
        found = _read(breaker)
        if found is not None and found[1] > BREAK_STALE_S:
            breaker.unlink(missing_ok=True)
        return False
    try:
        found = _read(path)
        if found is None or found[0] != holder:
            return False  # someone else already replaced it
        aside = path.with_name(f".{path.name}.stale.{os.getpid()}")
        os.replace(path, aside)
        aside.unlink(missing_ok=True)
        return True
    finally:
        breaker.unlink(missing_ok=True)


def acquire(run_dir: Path, wait: bool = False, stale_after_s: float = STALE_AFTER_S,
            heartbeat_s: float = HEARTBEAT_S, poll_s: float = 10.0) -> RunLock:
    """Take the run's lock, or raise RunLocked naming the holder (``wait``: poll until it is free)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK
    content = {**this_process(), "started": time.time(), "token": uuid.uuid4().hex}
    announced = False
    while True:
        if _create(path, content):
            return RunLock(path, content, heartbeat_s)
        found = _read(path)
        if found is None:
            continue
        holder, age = found
        reason = stale(holder, age, stale_after_s)
        if reason:
            if _break(path, holder):
                print(f"took over the run lock {path} from {describe(holder)}: {reason}")
            continue
        if not wait:
            raise RunLocked(f"{run_dir} is being trained by {describe(holder)} (lock {path}); not starting "
                            f"a second trainer (trainer.wait_for_lock=true waits for it)")
        if not announced:
            print(f"waiting for {describe(holder)} to release {path}")
            announced = True
        time.sleep(poll_s)
