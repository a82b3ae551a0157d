"""What one Ray task does: run ``python run.py <overrides>`` as a child process and report how it ended.

Standard library only: Ray ships this function to the workers by value, so a worker needs Python and the
repository at the same path (as SLURM needs them), not this package on its import path. The run is a
child process, not code in the worker, so its exit status keeps the runner's meaning (0 done or already
done, 2 config or data error, 75 held by another live trainer, 128+N stopped by signal N with a
checkpoint) and a run that calls ``sys.exit`` cannot take the worker with it. ``CUDA_VISIBLE_DEVICES``,
set on the worker by Ray for the GPUs the task holds, reaches the child through its environment.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TAIL_BYTES = 8192
NOISE = ("Set the environment variable HYDRA_FULL_ERROR",)


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has Linux send the child SIGTERM when the worker dies (a SIGKILL, a lost
    node's teardown): the run then saves a checkpoint and exits instead of training on as an orphan
    that holds the run lock. None where prctl is missing."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    parent = os.getpid()

    def arm() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
        if os.getppid() != parent:   # the worker died before prctl: nobody would send it
            os.kill(os.getpid(), signal.SIGTERM)
    return arm


def tail(path: Path) -> list[str]:
    """The last lines of the run's output (progress-bar redraws split apart, Hydra's hint dropped)."""
    with open(path, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - TAIL_BYTES))
        text = f.read().decode("utf-8", "replace")
    lines = [line.strip() for line in text.replace("\r", "\n").split("\n")]
    return [line for line in lines if line and not line.startswith(NOISE)][-20:]


def run_one(cmd: list[str], cwd: str, env: dict[str, str], log: str, stop: str,
            poll_s: float = 1.0) -> dict[str, Any]:
    """Run ``cmd``; on the driver's stop (the file ``stop`` appears, or Ray's cancel raises
    KeyboardInterrupt here) forward SIGTERM so the run saves a checkpoint, and wait for it."""
    out: dict[str, Any] = {"host": socket.gethostname(), "started": time.time(),
                           "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "rc": None,
                           "stopped": False, "tail": []}
    if os.path.exists(stop):   # queued when the driver stopped: never started
        out["stopped"] = True
        return {**out, "ended": time.time()}
    log_path = Path(log)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    proc = None
    try:
        with open(log_path, "ab") as sink:
            proc = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **env}, stdin=subprocess.DEVNULL,
                                    stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=die_with_parent())
            out["pid"] = proc.pid
            while proc.poll() is None:
                if not out["stopped"] and os.path.exists(stop):
                    proc.send_signal(signal.SIGTERM)
                    out["stopped"] = True
                time.sleep(poll_s)
    except KeyboardInterrupt:   # ray.cancel(): the driver is stopping
        if proc is not None:
            if proc.poll() is None and not out["stopped"]:   # one signal: a second one skips the checkpoint
                proc.send_signal(signal.SIGTERM)
            proc.wait()
        out["stopped"] = True
    out["rc"] = None if proc is None else proc.returncode
    out["ended"] = time.time()
    out["tail"] = tail(log_path) if log_path.exists() else []
    return out
