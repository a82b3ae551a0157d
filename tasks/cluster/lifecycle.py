"""What a run does around training so that a cluster can kill, preempt or requeue it at any moment.

``guard`` holds the run lock (tasks.cluster.runlock), writes ``status.json`` and removes what a kill left
(tasks.cluster.status), turns a full disk into one line naming the disk, installs the signal handlers
of ``Preemption`` (tasks.cluster.signals) and, under DDP, makes every rank agree on stopping and on an
error.
"""
from __future__ import annotations

import errno
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tasks.cluster import runlock
from tasks.cluster.signals import Preempted, Preemption, signal_grace
from tasks.cluster.status import Status, Unwritable, clean_stale_tmp, disk_full, writing_checkpoint

# --- the guard -------------------------------------------------------------------------------------------

@contextmanager
def guard(run_dir: Path, info: Any, trainer: dict[str, Any]) -> Iterator[tuple[Status, Preemption]]:
    """Lock (rank 0; every rank fails if it cannot), status.json, stale files, signals, one-line errors.

    ``trainer``: the run's trainer config (wait_for_lock, save_every_steps, save_every_minutes).
    """
    lock, error, is_main, unwritable = None, "", info.is_main, None
    if is_main:
        try:
            lock = runlock.acquire(run_dir, wait=bool(trainer["wait_for_lock"]))
        except runlock.RunLocked as locked:
            error = str(locked)
        except OSError as failure:
            if failure.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            unwritable = Unwritable(f"cannot write the run directory {run_dir}: "
                                    f"{failure.strerror} ({failure.filename}); runs_root must be writable "
                                    "to train (a finished run there is read as it is)")
            error = str(unwritable)
    error = agree_error(info)(error)
    if unwritable is not None:
        raise unwritable
    if error:
        raise runlock.RunLocked(error)
    status = Status(run_dir)
    if is_main:
        for path in clean_stale_tmp(run_dir):
            print(f"removed {path}, left by a process killed while writing it")
        status.write("running")
    preemption = Preemption(trainer["save_every_steps"], trainer["save_every_minutes"], agree_flags(info),
                            main=is_main, grace={} if info.distributed else signal_grace())  # [ddp] no cut
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
        if preemption.signum is not None and isinstance(failure, Exception):
            # the signal's other effects (a DataLoader worker of an evaluation killed by a signal to the
            # process group) broke the step: nothing new is saved, the last complete checkpoint is whole
            _finish_wandb(1)
            if is_main:
                status.write("preempted", signal=signal.Signals(preemption.signum).name, step=None,
                             error=f"{type(failure).__name__}: {' '.join(str(failure).split())[:300]}")
            print(f"stopped by {signal.Signals(preemption.signum).name} ({type(failure).__name__} after it); "
                  "resume continues from the last complete checkpoint", file=sys.stderr, flush=True)
            preemption.exit(Preempted(preemption.signum, None))
        full = disk_full(failure, writing_checkpoint(run_dir))
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
