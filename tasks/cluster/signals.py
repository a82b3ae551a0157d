"""Signals: a preempted, killed or time-limited run stops at a step boundary with a complete checkpoint.

On SIGTERM, SIGINT, SIGUSR1 or SIGUSR2 (SLURM's warning before a time limit; submitit's requeue signal)
training stops at the next step boundary with a complete checkpoint of that step, W&B is finished, and
the process exits with 128 + the signal number, the shell's code for "killed by that signal". Under
SLURM, TERM, USR1 and USR2 then requeue the job (``requeue``: submitit's own USR2 handler does it for
USR2 when it is installed; submitit only logs TERM, so the job is requeued here); INT never requeues
(the way to stop a run for good). A handler that was installed before is called after the checkpoint
is on disk, instead of at the signal. DataLoader workers ignore these signals (``QuietWorker``): a
signal sent to the whole process group (SLURM, ``kill -- -PGID``) reaches them too, and a dead worker
would kill the step before its checkpoint.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback

from tasks.cluster import runlock

SIGNALS = tuple(s for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGUSR1", None),
                            getattr(signal, "SIGUSR2", None)) if s is not None)
REQUEUE = tuple(s for s in SIGNALS if s != signal.SIGINT)  # under SLURM: save, then requeue


class Preempted(BaseException):
    """Raised after a signal, once the checkpoint is written (BaseException: no ``except Exception``
    between the Trainer and ``guard`` may swallow it)."""

    def __init__(self, signum: int, step: int | None) -> None:
        super().__init__(f"{signal.Signals(signum).name}" + (f" at step {step}" if step is not None else ""))
        self.signum, self.step = signum, step


# --- signals ---------------------------------------------------------------------------------------------

class Preemption(TrainerCallback):
    """Turns a signal into a checkpoint at the next step boundary; optionally saves every N steps/minutes.

    A signal during an epoch's last step or its evaluation is saved after the evaluation (an epoch-end
    checkpoint always holds its epoch's evaluation: resuming from it equals an uninterrupted run). Where
    the time left before SIGKILL is known (``grace``: SIGUSR2 under the SLURM launcher, its
    ``signal_delay_s``), the measured step, evaluation and save times decide: an evaluation that would
    not finish and save within it is interrupted, and the run stops at once with the last complete
    checkpoint (and is requeued) instead of being killed unrequeued; a run whose grace is too short says
    so once, with the value that would cover it.

    ``agree(flags)`` combines per-rank flags (DDP: an all-reduce max) so that every rank saves and stops
    at the same step.
    """

    MARGIN = 1.25   # estimates are times measured earlier in this run: leave a quarter for noise

    def __init__(self, every_steps: int | None = None, every_minutes: float | None = None,
                 agree: Callable[[list[bool]], list[bool]] = lambda flags: flags, main: bool = True,
                 grace: dict[int, float] | None = None) -> None:
        self.every_steps, self.every_minutes, self.agree, self.main = every_steps, every_minutes, agree, main
        self.grace = grace or {}
        self.signum: int | None = None
        self.stopping = False
        self.training = False
        self.last_save = time.monotonic()
        self.previous: dict[int, Any] = {}
        # measured in this process (s): the longest step, evaluation (epoch end to saved) and save
        self.step_s = self.eval_s = self.save_s = 0.0
        self.phase, self.since, self.save_from = "setup", time.monotonic(), None
        self.signalled_at, self.advised = 0.0, False

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in SIGNALS}

    def restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}

    def needs(self) -> float | None:
        """Seconds from now to a saved checkpoint, from this run's measurements (None: not measured)."""
        if not self.save_s:
            return None
        elapsed = time.monotonic() - self.since
        if self.phase == "epoch end":   # evaluating, then the epoch's save
            return None if not self.eval_s else max(self.eval_s - elapsed, 0.0) + self.save_s
        return max(self.step_s - elapsed, 0.0) + self.save_s if self.phase == "step" else self.save_s

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None or not self.training:
            self.signum = signum   # a second signal, or nothing to save yet: stop now
            raise Preempted(signum, None)
        self.signum, self.signalled_at = signum, time.monotonic()
        name, grace, need = signal.Signals(signum).name, self.grace.get(signum), self.needs()
        if self.phase == "epoch end" and grace is not None and need is not None and \
                need * self.MARGIN > grace:
            self._cut(f"caught {name} during an evaluation: it and the save need ~{need:.0f} s")
        budget = f" (~{need:.0f} s of the {grace:.0f} s before SIGKILL)" if grace and need is not None else ""
        where = "after this epoch's evaluation" if self.phase == "epoch end" else \
            "at the end of this step (after its evaluation if it ends an epoch)"
        print(f"caught {name}: saving a checkpoint {where}{budget}, then exiting", flush=True)

    def _check(self, state: Any, control: Any, at_epoch_end: bool = False) -> None:
        # the Trainer saves at every epoch end anyway: no periodic save on an epoch's last step
        last_step = not at_epoch_end and float(state.epoch or 0).is_integer()
        periodic = not at_epoch_end and not last_step and (
            bool(self.every_steps and state.global_step % self.every_steps == 0)
            or bool(self.every_minutes and time.monotonic() - self.last_save >= 60 * self.every_minutes))
        stop, periodic = self.agree([self.signum is not None, periodic])
        if stop and last_step:   # the epoch's evaluation comes first; on_epoch_end saves after it
            grace = self.grace.get(self.signum or 0)
            need = self.eval_s + self.save_s
            if grace is not None and self.eval_s and need * self.MARGIN > grace - (time.monotonic()
                                                                                 - self.signalled_at):
                self._cut(f"{signal.Signals(self.signum or 0).name} before an evaluation: it and the save "
                          f"need ~{need:.0f} s")
            return
        if stop:
            self.stopping = True
            control.should_save = control.should_training_stop = True
        elif periodic:
            control.should_save = True
        if control.should_save:
            self.save_from = time.monotonic()

    def _cut(self, what: str) -> None:
        """Stop now, without a new checkpoint: one that cannot be finished before SIGKILL is not started."""
        grace = self.grace.get(self.signum or 0, 0.0)
        print(f"{what}, more than the {grace:.0f} s before SIGKILL allow; stopping now, the run resumes from "
              "its last complete checkpoint", flush=True)
        raise Preempted(self.signum or signal.SIGTERM, None)

    def _advise(self) -> None:
        grace = self.grace.get(getattr(signal, "SIGUSR2", -1))
        worst = self.step_s + self.eval_s + self.save_s
        if grace is not None and not self.advised and self.eval_s and worst * self.MARGIN > grace:
            self.advised = True
            print(f"note: a step ({self.step_s:.0f} s), an evaluation ({self.eval_s:.0f} s) and a save "
                  f"({self.save_s:.0f} s) can take longer than the {grace:.0f} s between SLURM's time-limit "
                  f"signal and SIGKILL: a signal during an evaluation then stops without a new checkpoint; "
                  f"hydra.launcher.signal_delay_s={int(worst * self.MARGIN) + 1} covers them", flush=True)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.training = True
        loader = kwargs.get("train_dataloader")
        if loader is not None and getattr(loader, "num_workers", 0):  # before its first iter() forks them
            loader.worker_init_fn = QuietWorker(loader.worker_init_fn)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.phase, self.since = "step", time.monotonic()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        now = time.monotonic()
        self.step_s = max(self.step_s, now - self.since)
        self.phase, self.since = ("epoch end" if float(state.epoch or 0).is_integer() else "between"), now
        self._check(state, control)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # after tasks.training.evaluation.EpochEvaluation: its time is measured
        if self.phase == "epoch end":
            self.eval_s = max(self.eval_s, time.monotonic() - self.since)
        self.phase, self.since, self.save_from = "saving", time.monotonic(), time.monotonic()
        if not self.stopping:   # a signal during the epoch's evaluation: save now, not one step later
            self._check(state, control, at_epoch_end=True)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.last_save = time.monotonic()
        if self.save_from is not None:
            self.save_s = max(self.save_s, self.last_save - self.save_from)
            self.save_from = None
        self.phase, self.since = "between", self.last_save
        if self.stopping:   # after tasks.cluster.checkpoints.CompleteCheckpoints: the checkpoint is whole
            raise Preempted(self.signum or signal.SIGTERM, state.global_step)
        self._advise()

    def exit(self, error: Preempted) -> None:
        """Exit the way the signal's previous owner would, now that the checkpoint is safe."""
        self.training = False
        previous = self.previous.get(error.signum)
        self.restore()
        submitit_requeues = getattr(previous, "__name__", "") == "checkpoint_and_try_requeue"
        if error.signum in REQUEUE and self.main and not submitit_requeues:
            requeue()
        if callable(previous) and previous is not signal.default_int_handler:  # (KeyboardInterrupt)
            # submitit's USR2: requeue the SLURM job (rank 0) and sys.exit(-1); its TERM: a log line
            previous(error.signum, None)
        raise SystemExit(128 + error.signum)


def signal_grace() -> dict[int, float]:
    """Seconds between a signal and SIGKILL, where the launcher says: SLURM's time-limit warning (USR2,
    ``hydra.launcher.signal_delay_s`` of the submitit launchers). Other signals: not known here."""
    try:
        from hydra.core.hydra_config import HydraConfig

        delay = HydraConfig.get().launcher.get("signal_delay_s") if HydraConfig.initialized() else None
    except Exception:  # noqa: BLE001 -- no Hydra (a test, a library call): nothing known
        delay = None
    usr2 = getattr(signal, "SIGUSR2", None)
    return {usr2: float(delay)} if delay and usr2 is not None else {}


def requeue() -> bool:
    """Put this SLURM job back in the queue (the checkpoint is on disk); False outside SLURM or if
    SLURM refuses (a job that is not requeueable, an interactive allocation), with one line saying so."""
    job = runlock.slurm_job()
    if not job:
        return False
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        print(f"could not requeue SLURM job {job}: {error}", file=sys.stderr, flush=True)
        return False
    if done.returncode:
        why = " ".join((done.stderr or done.stdout).split())[:300]
        print(f"could not requeue SLURM job {job} (scontrol exit {done.returncode}): {why}; "
              "relaunch the same command to resume", file=sys.stderr, flush=True)
        return False
    print(f"requeued SLURM job {job}: it resumes from this checkpoint", file=sys.stderr, flush=True)
    return True


class QuietWorker:
    """A DataLoader ``worker_init_fn`` that makes the worker ignore the stop signals, then runs the
    Trainer's own (its seeding). The main process saves and stops the workers itself."""

    def __init__(self, then: Callable[[int], None] | None) -> None:
        self.then = then

    def __call__(self, worker_id: int) -> None:
        for s in SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        if self.then is not None:
            self.then(worker_id)
