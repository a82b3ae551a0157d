"""``hydra/launcher=ray``: every run of a sweep is one Ray task holding one GPU, on this machine or a cluster.

The driver behind hydra_plugins/ray_runs (the plugin class Hydra finds).

A thin launcher on Ray's public API (``ray.init``, ``ray.remote``, ``ray.wait``, ``ray.cancel``) rather
than hydra-ray-launcher, whose ``cloudpickle<3`` pin conflicts with joblib's ``>=3`` and whose runs execute
inside the worker (a run's ``sys.exit(2)`` kills the worker and Ray retries it as a lost worker).

Each task runs ``python run.py <the run's overrides>`` (tasks/cluster/ray_worker.py), so a run is the
same run as anywhere else: its run directory, lock, resume and result.json are the runner's. What comes
back is classified once, here:

    exit 0            done (or "already completed": skipped)
    exit 2            failed: a config or data error, deterministic, never retried
    exit 75           held: another live trainer has the run (tasks/cluster/runlock.py); the others go on
    128+N or killed   lost: a signal we did not send, a worker or node that died: started again (at most
                      max_retries times) with trainer.wait_for_lock=true, so it waits for the dying
                      trainer's checkpoint (or a dead node's lock to go stale) and resumes from it
    other             failed

On SIGINT/SIGTERM the driver writes a stop file and cancels the tasks: a running run gets SIGTERM, saves a
checkpoint and exits, queued runs never start; the driver waits for them, then exits 128+N. A second
signal stops without waiting. Each finished run prints one line; the run's own output goes to a log file.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus

from tasks import ROOT
from tasks.config.sweeps import varying

HELD, CONFIG_ERROR = 75, 2
STATES = ("done", "skipped", "failed", "held", "stopped")   # how a run ended, as the summary counts
SIGNAL_EXITS = {128 + s for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)}


@dataclass
class Run:
    num: int
    overrides: list[str]
    name: str                       # the overrides that vary across the sweep
    log: str
    state: str = "queued"           # done | skipped | failed | held | stopped | lost (then retried)
    reason: str = ""
    attempts: int = 0
    host: str | None = None
    cuda_visible_devices: str | None = None
    started: float | None = None
    ended: float | None = None
    rc: int | None = None
    history: list[str] = field(default_factory=list)   # what each earlier attempt ended with


def classify(out: dict[str, Any]) -> tuple[str, str]:
    """(state, one-line reason) of what the worker reported."""
    rc, lines = out["rc"], out["tail"]
    last = lines[-1] if lines else ""
    if rc is None:
        return "stopped", "not started (the launcher was stopping)"
    if rc == 0:
        skipped = next((ln for ln in lines if ln.startswith("already completed:")), None)
        done = next((ln for ln in reversed(lines) if ln.startswith("done ")), last)
        return ("skipped", skipped) if skipped else ("done", done.removeprefix("done "))
    if rc == CONFIG_ERROR:
        return "failed", last
    if rc == HELD:
        return "held", last
    if rc in SIGNAL_EXITS or rc < 0:
        how = f"signal {-rc}" if rc < 0 else f"exit {rc}"
        return ("stopped" if out["stopped"] else "lost"), f"{how}: {last}"
    return "failed", f"exit {rc}: {last}"


class Driver:
    def __init__(self, ray: dict[str, Any], max_retries: int = 3, progress: bool = False,
                 log_dir: str = "multirun/ray", forward_env: Sequence[str] = (),
                 python: str | None = None, poll_s: float = 1.0) -> None:
        self.ray_cfg = ray
        self.max_retries, self.progress, self.poll_s = max_retries, progress, poll_s
        self.log_dir, self.forward_env, self.python = log_dir, list(forward_env), python

    # --- what each task runs ---------------------------------------------------------------------------

    def command(self, overrides: list[str], retry: bool) -> list[str]:
        keys = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
        extra = ["hydra.mode=RUN"]   # a sweep file that sets MULTIRUN must not expand the grid again
        if not self.progress and "trainer.progress" not in keys:
            extra.append("trainer.progress=false")
        if retry:   # the lost attempt's trainer may still be saving its checkpoint: wait for its lock
            overrides = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != "trainer.wait_for_lock"]
            extra.append("trainer.wait_for_lock=true")
        return [self.python or sys.executable, str(ROOT / "run.py"), *overrides, *extra]

    def environment(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if any(k.startswith(p) for p in self.forward_env)}

    # --- the sweep -------------------------------------------------------------------------------------

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import ray
        from ray import cloudpickle

        from tasks.cluster import ray_worker as worker

        launch_dir = Path(self.log_dir) / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        stop_file = launch_dir / "STOP"
        names = varying(job_overrides)
        runs = [Run(initial_job_idx + i, list(o), names[i], str(launch_dir / f"{initial_job_idx + i}.log"))
                for i, o in enumerate(job_overrides)]

        init = {k: v for k, v in (self.ray_cfg.get("init") or {}).items() if v is not None}
        remote = {k: v for k, v in (self.ray_cfg.get("remote") or {}).items() if v is not None}
        started_ray = not ray.is_initialized()   # ours to shut down (a local Ray) or to disconnect from
        if started_ray:
            try:
                ray.init(**init)
            except (ValueError, ConnectionError, RuntimeError) as error:  # bad keys, no cluster, no token
                first = next((ln for ln in str(error).splitlines() if ln.strip()), type(error).__name__)
                print(f"config error: hydra.launcher.ray.init {init}: {first.strip()}", file=sys.stderr)
                raise SystemExit(2) from None
        try:
            self._check_resources(ray, remote, init)
            cloudpickle.register_pickle_by_value(worker)   # workers need no import path to this repo
            task = ray.remote(**{**remote, "max_retries": 0})(worker.run_one)   # retries are ours
            launch_dir.mkdir(parents=True, exist_ok=True)
            total = ray.cluster_resources()
            where = f"attached to {init['address']}" if init.get("address") else "local Ray"
            print(f"ray: {len(runs)} runs, each holding {remote.get('num_gpus', 0):g} GPU and "
                  f"{remote.get('num_cpus', 1):g} CPU, on {total.get('GPU', 0):g} GPUs / "
                  f"{total.get('CPU', 0):g} CPUs ({where}); run output in {launch_dir}/<n>.log", flush=True)
            stopped_by = self._run_all(ray, task, runs, stop_file)
        finally:
            if started_ray:
                ray.shutdown()
        summary = self._summary(runs, launch_dir)
        print(summary, flush=True)
        if stopped_by:
            raise SystemExit(128 + stopped_by)
        if any(r.state == "failed" for r in runs):
            raise SystemExit(1)
        return [JobReturn(overrides=r.overrides, status=JobStatus.COMPLETED, _return_value=r.state,
                          task_name="run") for r in runs]

    def _check_resources(self, ray: Any, remote: dict[str, Any], init: dict[str, Any]) -> None:
        """A run asking for more than the whole cluster has would wait forever: one line instead."""
        total = ray.cluster_resources()
        hints = {"GPU": "++hydra.launcher.ray.init.num_gpus=<N> declares N GPUs of a local Ray; "
                        "hydra.launcher.ray.remote.num_gpus=0 runs without GPUs",
                 "CPU": "++hydra.launcher.ray.init.num_cpus=<N> declares N CPUs of a local Ray"}
        for key, name in (("num_gpus", "GPU"), ("num_cpus", "CPU")):
            want = float(remote.get(key, 0) or 0)
            if want > total.get(name, 0):
                print(f"config error: each run asks for {want:g} {name} (hydra.launcher.ray.remote.{key}) "
                      f"but the Ray cluster has {total.get(name, 0):g}; {hints[name]}", file=sys.stderr)
                raise SystemExit(2)

    def _run_all(self, ray: Any, task: Any, runs: list[Run], stop_file: Path) -> int | None:
        env = self.environment()
        pending: dict[Any, Run] = {}

        def submit(run: Run) -> None:
            run.attempts += 1
            cmd = self.command(run.overrides, retry=run.attempts > 1)
            pending[task.remote(cmd, str(ROOT), env, run.log, str(stop_file), self.poll_s)] = run

        for run in runs:
            submit(run)
        signals: list[int] = []
        previous = {s: signal.signal(s, lambda signum, frame: signals.append(signum))
                    for s in (signal.SIGINT, signal.SIGTERM)}
        cancelled, finished = False, 0
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                if signals and not cancelled:
                    name = signal.Signals(signals[0]).name
                    print(f"ray: caught {name}: {len(pending)} runs stop (a running run saves a checkpoint "
                          "first; a second signal stops without waiting)", flush=True)
                    stop_file.write_text(f"{name}\n")
                    for ref in pending:
                        ray.cancel(ref)
                    cancelled = True
                if len(signals) > 1:
                    for ref, run in pending.items():
                        ray.cancel(ref, force=True)
                        run.state, run.reason = "stopped", "not waited for (second signal)"
                        finished += 1
                        print(self._line(run, finished, len(runs)), flush=True)
                    break
                for ref in ready:
                    run = pending.pop(ref)
                    self._finish(ray, ref, run)
                    if run.state == "lost" and run.attempts <= self.max_retries and not signals:
                        run.history.append(run.reason)
                        print(f"ray: {run.name}: lost ({run.reason}); starting it again "
                              f"({run.attempts}/{self.max_retries} retries), it resumes from its checkpoint",
                              flush=True)
                        submit(run)
                        continue
                    if run.state == "lost":
                        run.state = "stopped" if signals else "failed"
                        run.reason = (f"lost {run.attempts} times, last: {run.reason}" if not signals
                                      else run.reason)
                    finished += 1
                    print(self._line(run, finished, len(runs)), flush=True)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        return signals[0] if signals else None

    def _finish(self, ray: Any, ref: Any, run: Run) -> None:
        from ray.exceptions import RayTaskError, TaskCancelledError

        try:
            out = ray.get(ref)
        except TaskCancelledError:
            run.state, run.reason = "stopped", "not started (the launcher was stopping)"
            return
        except RayTaskError as error:   # the worker function itself raised (e.g. cannot write the log)
            run.state, run.reason = "failed", " ".join(str(error.cause).split())[:300]
            return
        except Exception as error:  # noqa: BLE001 -- a worker or node died, the object was lost, ...
            run.state, run.reason = "lost", f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"
            return
        run.state, run.reason = classify(out)
        run.rc, run.host, run.cuda_visible_devices = out["rc"], out["host"], out["cuda_visible_devices"]
        run.started, run.ended = out["started"], out["ended"]

    def _line(self, run: Run, finished: int, total: int) -> str:
        where = f" [{run.host} CUDA_VISIBLE_DEVICES={run.cuda_visible_devices}]" if run.host else ""
        log = f" (log {run.log})" if run.state in ("failed", "held", "stopped") else ""
        took = f" {run.ended - run.started:.0f}s" if run.started and run.ended else ""
        return f"[{finished}/{total}] {run.state:<7} {run.name}:{took}{where} {run.reason}{log}"

    def _summary(self, runs: list[Run], launch_dir: Path) -> str:
        from tasks.files import write_text

        write_text(launch_dir / "summary.json", json.dumps([asdict(r) for r in runs], indent=1) + "\n")
        counts = {s: sum(r.state == s for r in runs) for s in STATES}
        lines = [f"ray: {len(runs)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items())
                 + f" (details: {launch_dir / 'summary.json'})"]
        lines += [f"  {r.state} {r.name}: {r.reason}" for r in runs if r.state in STATES[2:]]
        return "\n".join(lines)
