"""What a run does around training so that a cluster can kill, preempt or requeue it at any moment.

``guard`` holds the run lock (tasks.runlock), writes ``status.json`` (running / preempted / failed /
completed; a run dir with status.json and no result.json is a run that has not finished), removes
temporary files a kill left behind, turns a full disk into one line naming the disk, and installs the
signal handlers of ``Preemption``.

On SIGTERM, SIGINT, SIGUSR1 or SIGUSR2 (SLURM's warning before a time limit; submitit's requeue signal)
training stops at the next step boundary with a complete checkpoint of that step, W&B is finished, and
the process exits with 128 + the signal number, the shell's code for "killed by that signal", so a
wrapper that requeues killed jobs requeues it. A handler that was installed before (submitit's, which
requeues the SLURM job and exits) is called after the checkpoint is on disk, instead of at the signal.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from capaboost.atomic import TMP_SUFFIX, write_text
from tasks import runlock

STATUS = "status.json"
SIGNALS = tuple(s for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGUSR1", None),
                            getattr(signal, "SIGUSR2", None)) if s is not None)
_STALE_TMP = re.compile(r"^\..+\.(\d+)" + re.escape(TMP_SUFFIX) + "$")   # capaboost.atomic.tmp_name


class Preempted(BaseException):
    """Raised after a signal, once the checkpoint is written (BaseException: no ``except Exception``
    between the Trainer and ``guard`` may swallow it)."""

    def __init__(self, signum: int, step: int | None) -> None:
        super().__init__(f"{signal.Signals(signum).name}" + (f" at step {step}" if step is not None else ""))
        self.signum, self.step = signum, step


class DiskFull(OSError):
    """A write failed for lack of space; the message names the disk (mount point) and the path."""


# --- status.json and stale files ------------------------------------------------------------------------

class Status:
    """status.json of one run: {"status", "host", "pid", "started", "updated", "slurm_job_id", ...}."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / STATUS
        self.base = {**runlock.this_process(), "started": _now()}
        self.outcome = "completed"  # what a run that returns normally ends as ("diverged": tasks.divergence)

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


def _writing(run_dir: Path) -> Path:
    """The checkpoint being written (the newest without a marker), for torch.save's pathless error."""
    from tasks.checkpoints import CHECKPOINTS, MARKER, _all

    return next((p for p in _all(run_dir / CHECKPOINTS) if not (p / MARKER).exists()), run_dir)


# --- signals ---------------------------------------------------------------------------------------------

class Preemption(TrainerCallback):
    """Turns a signal into a checkpoint at the next step boundary; optionally saves every N steps/minutes.

    ``agree(flags)`` combines per-rank flags (DDP: an all-reduce max) so that every rank saves and stops
    at the same step.
    """

    def __init__(self, every_steps: int | None = None, every_minutes: float | None = None,
                 agree: Callable[[list[bool]], list[bool]] = lambda flags: flags) -> None:
        self.every_steps, self.every_minutes, self.agree = every_steps, every_minutes, agree
        self.signum: int | None = None
        self.stopping = False
        self.training = False
        self.last_save = time.monotonic()
        self.previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in SIGNALS}

    def restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None or not self.training:
            self.signum = signum   # a second signal, or nothing to save yet: stop now
            raise Preempted(signum, None)
        self.signum = signum
        print(f"caught {signal.Signals(signum).name}: saving a checkpoint at the end of this step, then "
              "exiting", flush=True)

    def _check(self, state: Any, control: Any, at_epoch_end: bool = False) -> None:
        # the Trainer saves at every epoch end anyway: no periodic save on an epoch's last step
        periodic = not at_epoch_end and not float(state.epoch or 0).is_integer() and (
            bool(self.every_steps and state.global_step % self.every_steps == 0)
            or bool(self.every_minutes and time.monotonic() - self.last_save >= 60 * self.every_minutes))
        stop, periodic = self.agree([self.signum is not None, periodic])
        if stop:
            self.stopping = True
            control.should_save = control.should_training_stop = True
        elif periodic:
            control.should_save = True

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.training = True

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._check(state, control)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self.stopping:   # a signal during the epoch's evaluation: save now, not one step later
            self._check(state, control, at_epoch_end=True)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.last_save = time.monotonic()
        if self.stopping:   # after tasks.checkpoints.CompleteCheckpoints: the checkpoint is whole
            raise Preempted(self.signum or signal.SIGTERM, state.global_step)

    def exit(self, error: Preempted) -> None:
        """Exit the way the signal's previous owner would, now that the checkpoint is safe."""
        self.training = False
        previous = self.previous.get(error.signum)
        self.restore()
        if callable(previous) and previous is not signal.default_int_handler:  # (KeyboardInterrupt)
            # submitit's: requeue the SLURM job (rank 0) and sys.exit(-1); a plain run has none
            previous(error.signum, None)
        raise SystemExit(128 + error.signum)


# --- the guard -------------------------------------------------------------------------------------------

@contextmanager
def guard(run_dir: Path, info: Any, trainer: dict[str, Any]) -> Iterator[tuple[Status, Preemption]]:
    """Lock (rank 0; every rank fails if it cannot), status.json, stale files, signals, one-line errors.

    ``trainer``: the run's trainer config (wait_for_lock, save_every_steps, save_every_minutes).
    """
    lock, error, is_main = None, "", info.is_main
    if is_main:
        try:
            lock = runlock.acquire(run_dir, wait=bool(trainer["wait_for_lock"]))
        except runlock.RunLocked as locked:
            error = str(locked)
    error = agree_error(info)(error)
    if error:
        raise runlock.RunLocked(error)
    status = Status(run_dir)
    if is_main:
        for path in clean_stale_tmp(run_dir):
            print(f"removed {path}, left by a process killed while writing it")
        status.write("running")
    preemption = Preemption(trainer["save_every_steps"], trainer["save_every_minutes"], agree_flags(info))
    preemption.install()
    try:
        yield status, preemption
        if is_main:
            status.write(status.outcome)
    except Preempted as stop:
        _finish_wandb(1)
        if is_main:
            status.write("preempted", signal=signal.Signals(stop.signum).name, step=stop.step)
        print(f"stopped by {stop}" + (f"; resume continues from checkpoint-{stop.step}" if stop.step else ""),
              file=sys.stderr, flush=True)
        preemption.exit(stop)
    except BaseException as failure:
        full = disk_full(failure, _writing(run_dir))
        _finish_wandb(1)
        if is_main:
            message = " ".join(str(full or failure).split())[:500]
            status.write("failed", error=f"{type(failure).__name__}: {message}")
        if full is not None:
            raise full from None
        raise
    finally:
        preemption.restore()
        if lock is not None:
            lock.release()


def _finish_wandb(exit_code: int) -> None:
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        try:
            wandb.run.finish(exit_code=exit_code)
        except Exception as error:  # never hide the run's own error behind W&B's
            print(f"W&B finish failed: {error}", file=sys.stderr)


# --- DDP agreement ---------------------------------------------------------------------------------------

def agree_flags(info: Any) -> Callable[[list[bool]], list[bool]]:
    """Per-rank flags -> the same flags on every rank (any rank's True wins): one tiny all-reduce."""
    if not info.distributed:
        return lambda flags: flags

    def agree(flags: list[bool]) -> list[bool]:
        import torch
        import torch.distributed as dist

        device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
        t = torch.tensor([float(f) for f in flags], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]
    return agree


def agree_error(info: Any) -> Callable[[str], str]:
    """A message from any rank (rank 0's lock failure) -> the same message on every rank."""
    if not info.distributed:
        return lambda error: error

    def agree(error: str) -> str:
        import torch.distributed as dist

        errors: list[str | None] = [None] * info.world_size
        dist.all_gather_object(errors, error)
        return next((e for e in errors if e), "")
    return agree
