"""Step timing (rows interleaved round by round) and peak memory (one fresh process per row on CPU).

CPU peak memory is the resident-set high-water mark of a process that did nothing but build the
row and run a few steps, minus its RSS just before the steps: reset with /proc/self/clear_refs
where Linux allows it, else ``ru_maxrss``. The process is forked from a worker interpreter that
only imports and never runs a parallel torch op: forking a process that has used OpenMP threads
can hang the child (measured here: it does).
On CUDA, ``max_memory_allocated`` over the same steps, in this process.
"""
from __future__ import annotations

import ctypes
import gc
import json
import os
import random
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from . import rows as R

_ROOT = Path(__file__).resolve().parents[1]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], None], device: str) -> tuple[float, float]:
    """(wall, process CPU) seconds of one call. On a shared machine the CPU time of the process is
    the steadier number: other tenants stretch the wall clock, much less the work done."""
    _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def interleaved(steps: dict[str, Callable[[], None]], rounds: int, warmup: int, device: str,
                seed: int = 0) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """(wall, CPU) seconds per step of each row: ``warmup`` untimed steps each, then ``rounds``
    rounds that run every row once in a fresh random order."""
    for _ in range(warmup):
        for fn in steps.values():
            fn()
    order, rng = list(steps), random.Random(seed)
    wall: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            w, c = timed(steps[name], device)
            wall[name].append(w)
            cpu[name].append(c)
    return wall, cpu


# ---------------------------------------------------------------- memory

def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _trim() -> None:
    """Hand freed heap pages back to the OS so the steps cannot reuse them unseen."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def prime(row: R.Row) -> None:
    """One step, then forget the optimizer states: the measured steps allocate them afresh, while
    the code pages and one-off buffers that a first step touches are no longer counted."""
    row.step()
    if row.optimizer is not None:
        row.optimizer.state.clear()
        row.optimizer.zero_grad(set_to_none=True)


def cpu_peak_child(spec: dict[str, Any], shape: dict[str, int], threads: int, steps: int,
                   seed: int) -> dict[str, Any]:
    """Runs in a fresh process: build one row, run ``steps`` steps, report the RSS rise."""
    torch.set_num_threads(threads)
    shp = R.Shape(**shape)
    template = R.build_template(shp, "cpu", seed)
    batch = R.make_batch(shp, "cpu", seed)
    row = R.build_row(R.RowSpec(**spec), template, batch, seed + 1)
    prime(row)
    _trim()
    before = _status_kib("VmRSS")
    exact = before is not None and _reset_peak()
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(steps):
        row.step()
    if exact:
        peak_kib = _status_kib("VmHWM") - before
    else:  # the high-water mark may predate the steps: then this is an upper bound
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - (before or maxrss_before)
    return {"peak_bytes": max(0, peak_kib) * 1024, "method": "VmHWM-reset" if exact else "ru_maxrss",
            "optimizer_state_bytes": R.optimizer_state_bytes(row.optimizer)}


def cpu_peaks(specs: list[R.RowSpec], shape: R.Shape, threads: int, steps: int,
              seed: int) -> dict[str, dict[str, Any]]:
    """Peak memory of each row, each in a process forked from a fresh worker interpreter."""
    job = {"specs": [R.spec_dict(s) for s in specs], "shape": shape.to_dict(), "threads": threads,
           "steps": steps, "seed": seed}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(_ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.measure"], input=json.dumps(job), text=True,
                          capture_output=True, cwd=_ROOT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"peak-memory worker failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _worker(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Forks one child per row. First a one-thread pass over tiny versions of the rows, so each child
    inherits the lazy imports and first-call set-up instead of paying for them; one thread never
    opens an OpenMP region, so forking stays safe (checked: children then run with 2 threads)."""
    torch.set_num_threads(1)
    tiny = R.Shape.tiny()
    template, batch = R.build_template(tiny, "cpu"), R.make_batch(tiny, "cpu")
    for spec in job["specs"]:
        R.build_row(R.RowSpec(**spec), template, batch).step()
    del template, batch
    out = {}
    for spec in job["specs"]:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            os.close(r)
            code = 0
            try:
                msg = cpu_peak_child(spec, job["shape"], job["threads"], job["steps"], job["seed"])
            except BaseException as exc:  # report, never fall back into the worker's loop
                msg, code = {"error": f"{type(exc).__name__}: {exc}"}, 1
            with os.fdopen(w, "w") as fh:
                fh.write(json.dumps(msg))
            os._exit(code)
        os.close(w)
        with os.fdopen(r) as fh:
            text = fh.read()
        _, status = os.waitpid(pid, 0)
        msg = json.loads(text) if text else {"error": f"child exited with status {status}"}
        if "error" in msg:
            raise RuntimeError(f"peak memory of row {spec['name']!r}: {msg['error']}")
        out[spec["name"]] = msg
    return out


def cuda_peak(row: R.Row, steps: int, device: str) -> dict[str, Any]:
    """Before the timing warm-up; optimizer states are allocated inside the measured window."""
    prime(row)
    gc.collect()
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    for _ in range(steps):
        row.step()
    torch.cuda.synchronize(device)
    return {"peak_bytes": torch.cuda.max_memory_allocated(device) - before, "method": "cuda-max-allocated",
            "optimizer_state_bytes": R.optimizer_state_bytes(row.optimizer)}


if __name__ == "__main__":
    print(json.dumps(_worker(json.loads(sys.stdin.read()))))
