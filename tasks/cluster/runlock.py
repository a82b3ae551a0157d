"""One run, one trainer: a lock file in the run directory that works on a cluster's shared filesystem.

fcntl/flock locks are unreliable over NFS, so the lock is a file created with ``os.link`` from a fully
written temporary file (atomic and exclusive on NFS too: a second creator gets EEXIST, and a reader
never sees it half-written). It names its holder (host, pid namespace, pid, start time, a random token);
a daemon thread touches it every ``HEARTBEAT_S``. A dead holder does not keep it: a pid is judged only
where it means something (same host and same pid namespace: a container's pid 7 is not the host's pid
7), and where it no longer exists the lock is stale; anywhere else (another host, another namespace, a
lock without them) a heartbeat older than ``stale_after_s`` is. A lock file that is empty or not a lock
(a kill between create and write) never gets a heartbeat: it is stale once ``GARBAGE_STALE_S`` old.
Breaking a stale lock is itself serialised by a short-lived second lock (``<lock>.break``), and the
holder is re-read under it, so two processes that both find the same stale lock cannot both take the
run; a breaker left by a killed process is judged like a lock (dead pid, or older than
``BREAK_STALE_S``).
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

from tasks.files import tmp_name

LOCK = "run.lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0    # other host: no heartbeat for this long means the holder is gone
BREAK_STALE_S = 60.0     # a breaker lock is held for milliseconds; one this old was left by a kill
GARBAGE_STALE_S = HEARTBEAT_S   # an unreadable lock older than one heartbeat was left by a kill


class RunLocked(RuntimeError):
    """Another live process trains this run."""


class RunShared(RunLocked):
    """Another live process trains this run, and this launch's sweep name is left for it: not a failure."""


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


def read(path: Path) -> tuple[dict[str, Any], float] | None:
    """(holder, age of its heartbeat in s); None if the lock is gone. An unreadable lock (being written
    by the exclusive-create fallback, or left empty by a kill) reads as an empty holder."""
    try:
        age = time.time() - path.stat().st_mtime
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(text)
    except ValueError:
        holder = {}
    return (holder if isinstance(holder, dict) and "token" in holder else {}), age


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pid_namespace() -> str | None:
    """This process's pid namespace ("pid:[4026531836]"), or None where /proc does not say."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def judges_pid(holder: dict[str, Any]) -> bool:
    """Whether this process can tell from its pid whether ``holder`` lives: same host, same namespace."""
    return (holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int)
            and holder.get("pidns") is not None and holder.get("pidns") == pid_namespace())


def stale(holder: dict[str, Any], age: float, stale_after_s: float = STALE_AFTER_S) -> str | None:
    """Why the holder is gone, or None while it may still be training."""
    if not holder:
        return (f"the lock file is empty or not a lock, {age:.0f} s old (> {GARBAGE_STALE_S:.0f} s): "
                "left by a process killed while creating it") if age > GARBAGE_STALE_S else None
    if judges_pid(holder):
        pid = holder["pid"]
        return None if _alive(pid) else f"pid {pid} on this host ({holder['host']}) no longer exists"
    if age > stale_after_s:
        return f"its heartbeat is {age:.0f} s old (> {stale_after_s:.0f} s)"
    return None


def describe(holder: dict[str, Any], age: float | None = None) -> str:
    if not holder:
        return ("an unreadable lock file (empty or not a lock; judged stale "
                f"{GARBAGE_STALE_S:.0f} s after it was written)")
    started = holder.get("started")
    since = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(started)) if started else ""
    where = "" if judges_pid(holder) or holder.get("host") != socket.gethostname() else \
        " (another pid namespace: judged by its heartbeat)"
    beat = f", heartbeat {age:.0f} s ago" if age is not None else ""
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}{where}{since}{beat}"


class RunLock:
    """Held from ``acquire`` to ``release``; its heartbeat keeps it fresh while the run lives."""

    def __init__(self, path: Path, content: dict[str, Any], heartbeat_s: float) -> None:
        self.path, self.content = path, content
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat_s,), daemon=True,
                                        name="run-lock-heartbeat")
        self._thread.start()

    def owned(self) -> bool:
        found = read(self.path)
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


def slurm_job() -> str | None:
    """This SLURM job as ``scontrol requeue`` names it: ``<array job>_<task>`` for an array task."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def this_process() -> dict[str, Any]:
    """Who holds a lock or writes a status: host, pid and SLURM job (what a person needs to find it)."""
    return {"host": socket.gethostname(), "pidns": pid_namespace(), "pid": os.getpid(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID")}


def _break(path: Path, holder: dict[str, Any]) -> bool:
    """Remove the stale lock ``holder`` if it is still the one there; True if this process did."""
    breaker = path.with_name(path.name + ".break")
    if not _create(breaker, {**this_process(), "token": uuid.uuid4().hex}):
        found = read(breaker)
        if found is not None and (found[1] > BREAK_STALE_S or (found[0] and stale(found[0], 0.0))):
            breaker.unlink(missing_ok=True)  # left by a process killed while breaking: retry at once
        else:
            time.sleep(0.05)  # another process is breaking it right now (milliseconds)
        return False
    try:
        found = read(path)
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
        found = read(path)
        if found is None:
            continue
        holder, age = found
        reason = stale(holder, age, stale_after_s)
        if reason:
            if _break(path, holder):
                print(f"took over the run lock {path} from {describe(holder)}: {reason}")
            continue
        if not wait:
            raise RunLocked(f"{run_dir} is being trained by {describe(holder, age)} (lock {path}); not "
                            f"starting a second trainer (trainer.wait_for_lock=true waits for it)")
        if not announced:
            print(f"waiting for {describe(holder, age)} to release {path}")
            announced = True
        time.sleep(poll_s)
