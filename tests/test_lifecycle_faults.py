"""Faults around a run's life on a cluster, each planted for real on a tiny run: a SIGTERM to the whole
process group with DataLoader workers under a stand-in SLURM (``scontrol`` on PATH records the requeue),
a lock held from another pid namespace, lock leftovers, ``force`` on a requeued job, a torn result.json,
a read-only runs_root, a run held while another sweep asks for it. Every run that restarts must end
equal to an uninterrupted one (``assert_same_run``: metrics, per-epoch losses, adapter weights, 1e-6)."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runs import ROOT, run, spec_for
from test_faults import ENV, OVER, StopAfterSave, ckpts, copy_run
from test_resume import assert_same_run

from tasks.cluster import runlock


@pytest.fixture(scope="module")
def reference_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("reference")


@pytest.fixture(scope="module")
def reference(reference_root) -> dict:
    """The uninterrupted run every restarted one must equal."""
    return run(OVER, reference_root)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> Path:
    """A run stopped after its second checkpoint (checkpoint-2 and checkpoint-4, both complete)."""
    root = tmp_path_factory.mktemp("interrupted")
    with pytest.raises(Exception, match="4"):
        run(OVER, root, callbacks=(StopAfterSave(4),))
    return root


def stand_in_scontrol(tmp_path: Path, rc: int = 0) -> tuple[dict, Path]:
    """A PATH whose ``scontrol`` appends its arguments to a file (and exits ``rc``)."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol_calls"
    bin_dir.mkdir(parents=True)
    script = bin_dir / "scontrol"
    script.write_text(f'#!/bin/sh\necho "$@" >> {calls}\necho "stand-in refuses" >&2\nexit {rc}\n')
    script.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}, calls


# --- SIGTERM to the process group, with workers, under SLURM ---------------------------------------------

GROUP_SIGNAL = """
import os, signal, sys
from pathlib import Path
sys.path[:0] = [{root!r}, {tests!r}]
from transformers import TrainerCallback
from runs import run

class Preempt(TrainerCallback):
    def on_step_begin(self, args, state, control, **kw):
        if state.global_step == 2:  # step 3 starts, mid-epoch 2, with the epoch's workers running
            os.killpg(os.getpgid(0), signal.SIGTERM)   # what SLURM and `kill -TERM -- -PGID` do

run([*{over!r}, "trainer.num_workers=2"], Path({out!r}), callbacks=(Preempt(),))
"""


def test_group_sigterm_with_workers_saves_requeues_and_resumes(reference, tmp_path):
    path, calls = stand_in_scontrol(tmp_path)
    env = {**ENV, **path, "SLURM_JOB_ID": "4243", "SLURM_ARRAY_JOB_ID": "4240", "SLURM_ARRAY_TASK_ID": "3"}
    script = GROUP_SIGNAL.format(root=str(ROOT), tests=str(ROOT / "tests"), over=OVER, out=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300, start_new_session=True)   # its own group: the test is not in it
    assert proc.returncode == 143, proc.stderr[-3000:]
    assert "caught SIGTERM" in proc.stdout and "DataLoader worker" not in proc.stderr
    assert calls.read_text().split() == ["requeue", "4240_3"]   # the array task, as scontrol names it
    run_dir = Path(spec_for(OVER, tmp_path).run_dir)
    assert ckpts(run_dir) == ["checkpoint-2", "checkpoint-3"] and not (run_dir / "result.json").exists()
    status = json.loads((run_dir / "status.json").read_text())
    assert (status["status"], status["signal"], status["step"]) == ("preempted", "SIGTERM", 3)
    resumed = run(OVER, tmp_path)   # what the requeued job does
    assert resumed["resumed_from"].endswith("checkpoint-3")
    assert_same_run(reference, resumed)


def test_which_signals_requeue_under_slurm(tmp_path, monkeypatch, capsys):
    """TERM, USR1, USR2 requeue (USR2 by submitit's own handler where it is installed); INT never does;
    outside SLURM nothing is called; a refusal is one line."""
    from tasks.cluster.signals import Preempted, Preemption

    path, calls = stand_in_scontrol(tmp_path)
    monkeypatch.setenv("PATH", path["PATH"])
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)

    def stop(sig: int, previous=None, main: bool = True) -> int:
        p = Preemption(main=main)
        p.previous = {sig: previous} if previous else {}
        with pytest.raises(SystemExit) as code:
            p.exit(Preempted(sig, 5))
        return code.value.code

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert stop(signal.SIGTERM) == 143 and not calls.exists()
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    assert stop(signal.SIGINT) == 130 and not calls.exists()
    assert stop(signal.SIGTERM, main=False) == 143 and not calls.exists()   # DDP: rank 0 requeues
    assert stop(signal.SIGTERM) == 143 and stop(signal.SIGUSR1) == 138
    assert calls.read_text().splitlines() == ["requeue 77", "requeue 77"]

    def checkpoint_and_try_requeue(signum, frame):   # stands for submitit's USR2 handler (it requeues)
        seen.append(signum)
    seen: list[int] = []
    assert stop(signal.SIGUSR2, checkpoint_and_try_requeue) == 140
    assert seen == [signal.SIGUSR2] and len(calls.read_text().splitlines()) == 2   # not twice
    assert stop(signal.SIGUSR2) == 140 and len(calls.read_text().splitlines()) == 3  # plain sbatch: here

    path, _ = stand_in_scontrol(tmp_path / "refuses", rc=1)
    monkeypatch.setenv("PATH", path["PATH"])
    capsys.readouterr()
    assert stop(signal.SIGTERM) == 143
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "could not requeue SLURM job 77" in err[0] and "stand-in refuses" in err[0]


# --- the lock across pid namespaces, and its leftovers ---------------------------------------------------

NS_HOLD = """
import sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from tasks.cluster.runlock import acquire
acquire(Path({run_dir!r}), heartbeat_s=0.2)
print("held", flush=True)
time.sleep(600)
"""


def _unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True,
                              timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _unshare_works(), reason="needs unshare --pid (root or user namespaces)")
def test_lock_held_from_another_pid_namespace_is_judged_by_its_heartbeat(tmp_path, capsys):
    over = [*OVER, "trainer.epochs=1"]
    run_dir = Path(spec_for(over, tmp_path).run_dir)
    hold = NS_HOLD.format(root=str(ROOT), run_dir=str(run_dir))
    # a container's trainer: its pid (after a few forks inside) means nothing out here
    inner = f'for i in 1 2 3 4 5 6 7 8; do /bin/true; done; {sys.executable} -c "$0"; :'
    holder = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", inner, hold],
                              stdout=subprocess.PIPE, text=True, env=ENV, start_new_session=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = json.loads((run_dir / runlock.LOCK).read_text())
        assert lock["pidns"] != runlock.pid_namespace() and lock["host"] == socket.gethostname()
        with pytest.raises(runlock.RunLocked) as locked:
            run(over, tmp_path)
        assert "another pid namespace" in str(locked.value) and "\n" not in str(locked.value)
        assert not (run_dir / "checkpoints").exists()   # no second trainer
    finally:
        os.killpg(holder.pid, signal.SIGKILL)   # the whole container
        holder.wait()
    old = time.time() - runlock.STALE_AFTER_S - 5
    os.utime(run_dir / runlock.LOCK, (old, old))   # the container died: its heartbeat stops
    capsys.readouterr()
    assert run(over, tmp_path)["status"] == "completed"
    assert "heartbeat is" in capsys.readouterr().out


def test_lock_leftovers_neither_spin_nor_block(reference, tmp_path, capsys):
    run_dir = Path(spec_for(OVER, tmp_path).run_dir)
    run_dir.mkdir(parents=True)
    # a breaker left by a process killed while breaking a lock (its pid is gone) ...
    dead = {"host": socket.gethostname(), "pidns": runlock.pid_namespace(), "pid": 2**22 + 11,
            "started": 0, "token": "dead"}
    (run_dir / "run.lock.break").write_text(json.dumps(dead))
    (run_dir / runlock.LOCK).write_text(json.dumps(dead))   # ... over the stale lock it was breaking
    began = time.monotonic()
    lock = runlock.acquire(run_dir)
    assert time.monotonic() - began < 2 and lock.owned()
    lock.release()
    # an empty lock (a kill between create and write): named as such, then judged by its age
    (run_dir / runlock.LOCK).write_text("")
    with pytest.raises(runlock.RunLocked, match="unreadable lock file") as locked:
        run(OVER, tmp_path)
    assert "pid ?" not in str(locked.value)
    old = time.time() - runlock.GARBAGE_STALE_S - 1
    os.utime(run_dir / runlock.LOCK, (old, old))
    capsys.readouterr()
    result = run(OVER, tmp_path)
    assert "empty or not a lock" in capsys.readouterr().out
    assert_same_run(reference, result)


# --- force, torn results, read-only runs ----------------------------------------------------------------

def test_force_discards_once_and_a_requeue_resumes(reference, reference_root, tmp_path, monkeypatch, capsys):
    finished = copy_run(reference_root, tmp_path)
    assert (finished / "result.json").is_file()
    monkeypatch.setenv("SLURM_JOB_ID", "91")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    forced = [*OVER, "force=true"]
    with pytest.raises(Exception, match="4"):   # the forced launch is preempted after checkpoint-4
        run(forced, tmp_path, callbacks=(StopAfterSave(4),))
    assert "discarded the finished result" in capsys.readouterr().out
    assert ckpts(finished) == ["checkpoint-2", "checkpoint-4"] and not (finished / "result.json").exists()
    resumed = run(forced, tmp_path)   # the requeue repeats force=true: it must not restart from 0
    assert resumed["resumed_from"].endswith("checkpoint-4")
    assert_same_run(reference, resumed)
    capsys.readouterr()
    again = run(forced, tmp_path)     # requeued once more after it finished: nothing is trained again
    assert "already completed" in capsys.readouterr().out and again["runtime_s"] == resumed["runtime_s"]


@pytest.mark.parametrize("torn", [b"", b'{"task": "glue/cola", "metr', b'{"task": "\xff\xfe"}'],
                         ids=["empty", "truncated", "not-utf8"])
def test_torn_result_is_set_aside_and_the_run_resumes(torn, reference, interrupted, tmp_path, capsys):
    run_dir = copy_run(interrupted, tmp_path)
    (run_dir / "result.json").write_bytes(torn)
    capsys.readouterr()
    resumed = run(OVER, tmp_path)
    out = capsys.readouterr().out
    assert "was unreadable" in out and "the run continues from its checkpoints" in out
    assert [p.read_bytes() for p in run_dir.glob("result.json.torn-*")] == [torn]
    assert resumed["resumed_from"].endswith("checkpoint-4")
    assert_same_run(reference, resumed)
    assert json.loads((run_dir / "result.json").read_text())["global_step"] == 6


READ_ONLY = """
import sys
sys.path[:0] = [{root!r}, {tests!r}]
from pathlib import Path
from runs import run
from tasks.cluster.status import Unwritable
print("finished:", run({over!r}, Path({root_ro!r}))["status"], flush=True)
try:
    run([*{over!r}, "seed=5"], Path({root_ro!r}))
except Unwritable as error:
    print("unfinished:", error, flush=True)
"""


def test_read_only_runs_root(reference, reference_root, tmp_path):
    if subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode:
        pytest.skip("needs unshare --mount for a read-only bind mount")
    root = tmp_path / "runs"
    copy_run(reference_root, root)
    script = READ_ONLY.format(root=str(ROOT), tests=str(ROOT / "tests"), over=OVER, root_ro=str(root))
    mount = (f"mount --bind {root} {root} && mount -o remount,bind,ro {root} && "
             f'exec {sys.executable} -c "$0"')
    proc = subprocess.run(["unshare", "--mount", "sh", "-c", mount, script], capture_output=True, text=True,
                          env=ENV, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert "finished: completed" in lines    # a no-op, no os.utime failure
    line = next(ln for ln in lines if ln.startswith("unfinished:"))
    assert "cannot write the run directory" in line and "Read-only file system" in line


# --- a held run asked for by another sweep, and a failure before training -------------------------------

HOLD = """
import sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from tasks.cluster.runlock import acquire
acquire(Path({run_dir!r}))
print("held", flush=True)
time.sleep(600)
"""


def hold(run_dir: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD.format(root=str(ROOT), run_dir=str(run_dir))],
                              stdout=subprocess.PIPE, text=True, env=ENV)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_sweep_that_finds_its_run_held_leaves_its_name_and_exits_cleanly(tmp_path, capsys):
    from tasks.runner import execute

    over = [*OVER, "trainer.epochs=1"]
    spec = spec_for(over, tmp_path)
    run_dir = Path(spec.run_dir)
    holder = hold(run_dir)
    try:
        with pytest.raises(runlock.RunShared) as shared:
            execute(dataclasses.replace(spec, sweep="fig4_r_by_d"))
        assert "fig4_r_by_d is recorded" in str(shared.value) and "\n" not in str(shared.value)
        assert (run_dir / "sweeps.pending" / "fig4_r_by_d").is_file()
    finally:
        holder.kill()
        holder.wait()
    result = execute(dataclasses.replace(spec, sweep="fig1_rank_params"))   # the relaunch trains it once
    assert result["sweeps"] == ["fig1_rank_params", "fig4_r_by_d"]
    assert json.loads((run_dir / "result.json").read_text())["sweeps"] == result["sweeps"]
    assert not (run_dir / "sweeps.pending").exists()
    # the holder finished between the refusal and the name: the late sweep adds itself under the lock
    from tasks.cluster import finished
    finished.record_pending(run_dir, "glue_roberta_base")
    again = execute(dataclasses.replace(spec, sweep="fig1_rank_params"))
    assert again["sweeps"] == ["fig1_rank_params", "fig4_r_by_d", "glue_roberta_base"]


def test_a_held_run_does_not_stop_a_local_multirun(tmp_path):
    """`-m seed=1,4` while another process trains seed 1: seed 4 still runs; the launch exits 0."""
    over = [o for o in (*OVER, "trainer.epochs=1") if not o.startswith("trainer.epochs=3")]
    from runs import TINY
    args = [*TINY, *over, f"runs_root={tmp_path}"]
    held_dir = Path(spec_for([*over, "seed=1"], tmp_path).run_dir)
    holder = hold(held_dir)
    try:
        proc = subprocess.run([sys.executable, "run.py", "-m", *args, "seed=1,4"], capture_output=True,
                              text=True, env=ENV, cwd=ROOT, timeout=300)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 0, proc.stderr[-3000:]
    skipped = [ln for ln in proc.stdout.splitlines() if ln.startswith("skipped:")]
    assert len(skipped) == 1 and str(held_dir) in skipped[0]
    assert (Path(spec_for([*over, "seed=4"], tmp_path).run_dir) / "result.json").is_file()
    assert not (held_dir / "result.json").exists()


def test_a_failure_before_training_leaves_a_status(tmp_path, monkeypatch):
    """A run that cannot start (here its process group: DDP set-up) says why in status.json; the lock is
    released. A config error (trainer.device=cuda without CUDA) writes nothing:
    tests/tasks/training/test_device.py."""
    from tasks.cluster import distributed

    def no_group(cuda: bool):
        raise RuntimeError("the process group could not start: connection refused by the rendezvous")

    monkeypatch.setattr(distributed, "setup", no_group)
    over = [*OVER, "trainer.epochs=1"]
    with pytest.raises(RuntimeError, match="connection refused"):
        run(over, tmp_path)
    run_dir = Path(spec_for(over, tmp_path).run_dir)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and status["stage"] == "before training"
    assert status["error"].startswith("RuntimeError: the process group could not start")
    assert not (run_dir / "run.lock").exists()


# --- a signal in an epoch's last step, or during its evaluation ------------------------------------------

LAST_STEP = """
import os, signal, sys
from pathlib import Path
sys.path[:0] = [{root!r}, {tests!r}]
from transformers import TrainerCallback
from runs import run

class Signal(TrainerCallback):
    def on_step_begin(self, args, state, control, **kw):
        if state.global_step == 3:  # step 4 starts: the last step of epoch 2, its evaluation not yet run
            os.kill(os.getpid(), signal.SIGUSR2)

run({over!r}, Path({out!r}), callbacks=(Signal(),))
"""


def test_signal_in_an_epochs_last_step_saves_first_and_the_resume_evaluates_that_epoch(reference, tmp_path):
    script = LAST_STEP.format(root=str(ROOT), tests=str(ROOT / "tests"), over=OVER, out=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 128 + signal.SIGUSR2, proc.stderr[-3000:]
    run_dir = Path(spec_for(OVER, tmp_path).run_dir)
    assert ckpts(run_dir) == ["checkpoint-2", "checkpoint-4"]
    resumed = run(OVER, tmp_path)
    assert resumed["resumed_from"].endswith("checkpoint-4")
    assert_same_run(reference, resumed)   # epoch 2's evaluation ran at the start of the resumed run


DURING_EVAL = """
import os, signal, sys
from pathlib import Path
sys.path[:0] = [{root!r}, {tests!r}]
from transformers import TrainerCallback
import tasks.cluster.lifecycle
from runs import run

# SLURM's time-limit warning with a grace shorter than the evaluation and save measured in epoch 1
tasks.cluster.lifecycle.signal_grace = lambda: {{signal.SIGUSR2: {grace}}}

class Signal(TrainerCallback):
    sent = False
    def on_prediction_step(self, args, state, control, **kw):
        if state.global_step == 4 and not self.sent:   # inside epoch 2's evaluation
            self.sent = True
            os.kill(os.getpid(), signal.SIGUSR2)

run({over!r}, Path({out!r}), callbacks=(Signal(),))
"""


def test_signal_during_an_evaluation_longer_than_the_grace_stops_at_once(reference, tmp_path):
    script = DURING_EVAL.format(root=str(ROOT), tests=str(ROOT / "tests"), over=OVER, out=str(tmp_path),
                                grace=0.001)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 128 + signal.SIGUSR2, proc.stderr[-3000:]
    assert "hydra.launcher.signal_delay_s=" in proc.stdout          # the advice, after epoch 1
    assert "during an evaluation" in proc.stdout and "stopping now" in proc.stdout
    run_dir = Path(spec_for(OVER, tmp_path).run_dir)
    assert ckpts(run_dir) == ["checkpoint-2"]                       # no checkpoint without its evaluation
    status = json.loads((run_dir / "status.json").read_text())
    assert (status["status"], status["signal"], status["step"]) == ("preempted", "SIGUSR2", None)
    resumed = run(OVER, tmp_path)
    assert resumed["resumed_from"].endswith("checkpoint-2")
    assert_same_run(reference, resumed)


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGUSR2"])
def test_submitit_local_job_saves_and_is_requeued(sig, reference, tmp_path, monkeypatch):
    """submitit's real handlers (TERM: a log line; USR2: its own requeue) under its local executor: the
    checkpoint comes first; then TERM is requeued with scontrol here, USR2 by submitit itself (its local
    executor reruns the job, which resumes and ends equal to an uninterrupted run)."""
    import submitit
    from submitit_jobs import SignalledRun

    path, calls = stand_in_scontrol(tmp_path)
    for key, value in {**ENV, **path, "SLURM_JOB_ID": "555",
                       "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    executor = submitit.LocalExecutor(folder=tmp_path / "submitit")
    executor.update_parameters(timeout_min=10_000)   # a preemption, not a time-out
    job = executor.submit(SignalledRun(), str(tmp_path / "runs"), OVER, sig)
    run_dir = Path(spec_for(OVER, tmp_path / "runs").run_dir)
    if sig == "SIGTERM":
        with pytest.raises(submitit.core.utils.UncompletedJobError):   # it exited for SLURM to requeue
            job.result()
        log = (job.stdout() or "") + (job.stderr() or "")
        assert "caught SIGTERM" in log and "Bypassing signal SIGTERM" in log   # submitit's handler, after
        assert calls.read_text().split() == ["requeue", "555"] and "requeued SLURM job 555" in log
        assert ckpts(run_dir) == ["checkpoint-2", "checkpoint-3"]
        assert json.loads((run_dir / "status.json").read_text())["status"] == "preempted"
    else:
        result = job.result()                          # requeued and resumed by submitit itself
        log = (job.stdout() or "") + (job.stderr() or "")
        assert "caught SIGUSR2" in log and "Requeued job" in log and not calls.exists()
        assert result["resumed_from"].endswith("checkpoint-3")
        assert_same_run(reference, result)


def test_slurm_jobs_are_submitted_requeueable(tmp_path, monkeypatch):
    from submitit.slurm.slurm import SlurmExecutor
    from test_launcher import Submitted, make_launcher, slurm_cfg

    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    monkeypatch.setattr(SlurmExecutor, "_submit_command",
                        lambda self, command: (_ for _ in ()).throw(Submitted(
                            self._make_submission_file_text(command, "uid"))))
    with pytest.raises(Submitted) as script:
        make_launcher(slurm_cfg(tmp_path)).launch([["task=squad/v1", "seed=42"]], initial_job_idx=0)
    assert "#SBATCH --requeue" in str(script.value).splitlines()
    assert "#SBATCH --signal=USR2@120" in str(script.value).splitlines()


GROUP_DURING_EVAL = """
import os, signal, subprocess, sys
from pathlib import Path
sys.path[:0] = [{root!r}, {tests!r}]
from transformers import TrainerCallback
from runs import run

class Preempt(TrainerCallback):
    sent = False
    def on_prediction_step(self, args, state, control, **kw):
        if state.global_step == 4 and not self.sent:   # epoch 2's evaluation, its workers running
            self.sent = True   # as SLURM does: from outside, to the whole group (eval workers too)
            subprocess.run(["kill", "-TERM", "--", f"-{{os.getpgid(0)}}"])

run([*{over!r}, "trainer.num_workers=2", "trainer.eval_batch_size=2"], Path({out!r}),
    callbacks=(Preempt(),))
"""


def test_group_sigterm_during_an_evaluation_with_workers_stops_on_the_last_checkpoint(reference, tmp_path):
    """The evaluation's DataLoader workers die of the group signal (only the training loader's ignore it):
    the run still ends as preempted, exit 143, on its last complete checkpoint, and resumes equal."""
    script = GROUP_DURING_EVAL.format(root=str(ROOT), tests=str(ROOT / "tests"), over=OVER, out=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, cwd=ROOT,
                          timeout=300, start_new_session=True)
    assert proc.returncode == 143, proc.stderr[-3000:]
    run_dir = Path(spec_for(OVER, tmp_path).run_dir)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "preempted" and status["signal"] == "SIGTERM"
    if status["step"] is None:   # the workers' death broke the evaluation: no checkpoint without it
        assert "DataLoader worker" in status["error"] and ckpts(run_dir) == ["checkpoint-2"]
    else:                         # the evaluation had already been fetched: saved after it
        assert status["step"] == 4 and ckpts(run_dir) == ["checkpoint-2", "checkpoint-4"]
    resumed = run(OVER, tmp_path)
    assert_same_run(reference, resumed)
