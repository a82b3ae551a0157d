"""Fault injection on tiny runs: torn and truncated checkpoints, a signal mid-epoch, stale temporary files,
a full disk, two trainers on one run. Every run that restarts must end equal to an uninterrupted one
(metrics, per-epoch eval losses, adapter weights: ``assert_same_run``)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runs import ROOT, run, spec_for
from test_resume import OVERRIDES, assert_same_run
from transformers import TrainerCallback

# Three epochs of two steps (checkpoints at steps 2, 4, 6), dropout in the backbone and the branches.
OVER = [*OVERRIDES, "peft=capaboost_lora"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline",
       "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


class Stop(Exception):
    pass


class StopAfterSave(TrainerCallback):
    """Stands for a kill right after the checkpoint of ``step`` is complete (marker written)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Stop(state.global_step)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The uninterrupted run (logged to W&B, offline: the resumed run's W&B history must match it)."""
    return run([*OVER, "logger=wandb"], tmp_path_factory.mktemp("reference"))


def wandb_axis(run_dir: Path) -> tuple[list[tuple], list[bool]]:
    """The W&B history as one run after ``wandb sync --append`` of every offline segment: a row a later
    segment logs again replaces the earlier one. Returns ((step, global_step, report loss) per row, and
    whether each segment was finished)."""
    from wandb_records import history

    segments = [history(f) for f in sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))]
    rows: dict[int, dict] = {}
    for seg_rows, _ in segments:
        first = seg_rows[0]["_step"] if seg_rows else None
        rows = {k: v for k, v in rows.items() if first is None or k < first}
        rows.update({r["_step"]: r for r in seg_rows})
    axis = [(k, r.get("train/global_step"), r.get("eval/report_loss")) for k, r in sorted(rows.items())]
    return axis, [finished for _, finished in segments]


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> Path:
    """A run stopped after its second checkpoint: checkpoint-2 and checkpoint-4, both complete."""
    root = tmp_path_factory.mktemp("interrupted")
    with pytest.raises(Stop):
        run(OVER, root, callbacks=(StopAfterSave(4),))
    return root


def copy_run(source_root: Path, tmp_path: Path) -> Path:
    src, dst = (Path(spec_for(OVER, r).run_dir) for r in (source_root, tmp_path))
    shutil.copytree(src, dst)
    return dst


def ckpts(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").glob("checkpoint-*"))


def truncate(path: Path, keep: int | None = None) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])


def test_interrupted_run_keeps_two_complete_checkpoints(interrupted):
    from tasks.cluster.checkpoints import MARKER, problem

    run_dir = Path(spec_for(OVER, interrupted).run_dir)
    assert ckpts(run_dir) == ["checkpoint-2", "checkpoint-4"]
    for name in ckpts(run_dir):
        assert problem(run_dir / "checkpoints" / name) is None
        files = json.loads((run_dir / "checkpoints" / name / MARKER).read_text())["files"]
        assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth",
                "trainer_state.json"} <= files.keys()


@pytest.mark.parametrize("name, keep", [
    ("trainer_state.json", 0), ("trainer_state.json", None), ("model.safetensors", None),
    ("optimizer.pt", None), ("rng_state.pth", None), ("scheduler.pt", None)])
def test_broken_newest_checkpoint_falls_back_to_the_older_one(name, keep, reference, interrupted, tmp_path,
                                                             capsys):
    run_dir = copy_run(interrupted, tmp_path)
    bad = run_dir / "checkpoints" / "checkpoint-4" / name
    truncate(bad, keep)
    capsys.readouterr()
    resumed = run(OVER, tmp_path)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "unusable" in ln]
    assert len(lines) == 1 and str(bad) in lines[0] and "resuming from checkpoint-2" in lines[0], lines
    assert resumed["resumed_from"].endswith("checkpoint-2")
    assert_same_run(reference, resumed)


def test_broken_only_checkpoint_starts_from_scratch(reference, interrupted, tmp_path, capsys):
    run_dir = copy_run(interrupted, tmp_path)
    shutil.rmtree(run_dir / "checkpoints" / "checkpoint-2")
    truncate(run_dir / "checkpoints" / "checkpoint-4" / "optimizer.pt")
    capsys.readouterr()
    resumed = run(OVER, tmp_path)
    assert "starting at step 0" in capsys.readouterr().out
    assert resumed["resumed_from"] is None
    assert_same_run(reference, resumed)


def test_kill_before_the_marker_keeps_the_previous_checkpoint_even_with_limit_one(tmp_path, monkeypatch):
    """The Trainer's rotation runs before any callback; here rotation follows the marker, so a kill
    between a checkpoint's files and its marker still leaves the previous complete one."""
    import tasks.cluster.checkpoints as C

    real = C.write_marker

    def die_at_4(folder, step):
        if step == 4:
            raise Stop(step)
        return real(folder, step)

    monkeypatch.setattr(C, "write_marker", die_at_4)
    over = [*OVER, "trainer.save_total_limit=1"]
    with pytest.raises(Stop):
        run(over, tmp_path)
    run_dir = Path(spec_for(over, tmp_path).run_dir)
    assert ckpts(run_dir) == ["checkpoint-2", "checkpoint-4"]
    assert C.last_complete_checkpoint(run_dir / "checkpoints").endswith("checkpoint-2")
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and "Stop" in status["error"]


SIGNAL_SCRIPT = """
import os, signal, sys
from pathlib import Path
sys.path[:0] = [{root!r}, {tests!r}]
from transformers import TrainerCallback
from runs import run

class Signal(TrainerCallback):
    def on_step_begin(self, args, state, control, **kw):
        if state.global_step == 2:  # step 3 starts: the middle of epoch 2
            os.kill(os.getpid(), signal.{sig})

run([*{over!r}, "logger=wandb"], Path({out!r}), callbacks=(Signal(),))
"""


@pytest.mark.parametrize("sig", ["SIGTERM"])
def test_signal_mid_epoch_saves_that_step_and_resumes_from_it(sig, reference, tmp_path):
    script = SIGNAL_SCRIPT.format(root=str(ROOT), tests=str(ROOT / "tests"), sig=sig, over=OVER,
                                  out=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, cwd=ROOT,
                          timeout=300)
    signum = getattr(signal, sig)
    assert proc.returncode == 128 + signum, proc.stderr[-3000:]
    assert f"caught {sig}" in proc.stdout and "resume continues from checkpoint-3" in proc.stderr
    run_dir = Path(spec_for(OVER, tmp_path).run_dir)
    assert ckpts(run_dir) == ["checkpoint-2", "checkpoint-3"] and not (run_dir / "result.json").exists()
    status = json.loads((run_dir / "status.json").read_text())
    assert (status["status"], status["signal"], status["step"]) == ("preempted", sig, 3)
    resumed = run([*OVER, "logger=wandb"], tmp_path)
    assert resumed["resumed_from"].endswith("checkpoint-3")  # mid-epoch: epoch 1.5
    assert_same_run(reference, resumed)
    # W&B: two offline segments, both finished (the signal too), one step axis equal to the reference's
    axis, finished = wandb_axis(run_dir)
    ref_axis, ref_finished = wandb_axis(Path(reference["run_dir"]))
    assert finished == [True, True] and ref_finished == [True]
    assert [a[:2] for a in axis] == [r[:2] for r in ref_axis] and len(axis) > 4
    losses = [[float("nan") if row[2] is None else row[2] for row in x] for x in (axis, ref_axis)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-6, nan_ok=True)
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"


def test_signal_is_handed_to_the_previous_handler_after_the_checkpoint():
    """submitit's USR2 handler (requeue, then exit) must run only once the checkpoint is complete."""
    from types import SimpleNamespace

    from tasks.cluster.signals import Preempted, Preemption

    calls = []
    old = signal.signal(signal.SIGUSR2, lambda s, f: calls.append(("submitit", s)))
    try:
        p = Preemption()
        p.install()
        p.training = True
        os.kill(os.getpid(), signal.SIGUSR2)
        assert calls == []   # nothing exits during the step
        state, control = SimpleNamespace(global_step=7, epoch=1.5), SimpleNamespace(should_save=False,
                                                                          should_training_stop=False)
        p.on_step_end(None, state, control)
        assert control.should_save and control.should_training_stop
        with pytest.raises(Preempted) as stop:
            p.on_save(None, state, control)
        assert (stop.value.signum, stop.value.step) == (signal.SIGUSR2, 7)
        with pytest.raises(SystemExit) as code:
            p.exit(stop.value)
        assert calls == [("submitit", signal.SIGUSR2)] and code.value.code == 128 + signal.SIGUSR2
    finally:
        signal.signal(signal.SIGUSR2, old)


def test_signal_before_training_or_a_second_one_stops_at_once():
    from tasks.cluster.signals import Preempted, Preemption

    p = Preemption()
    p.install()
    try:
        with pytest.raises(Preempted) as stop:   # nothing to save yet (data, model): no step to wait for
            os.kill(os.getpid(), signal.SIGINT)
        assert stop.value.step is None
        p.training, p.signum = True, None
        os.kill(os.getpid(), signal.SIGTERM)      # first: wait for the step boundary
        with pytest.raises(Preempted):
            os.kill(os.getpid(), signal.SIGTERM)  # second: the user insists
    finally:
        p.restore()


def test_periodic_checkpoints_inside_an_epoch(tmp_path):
    over = [*OVER, "trainer.epochs=1", "trainer.save_every_steps=1", "trainer.save_total_limit=3"]
    saves = []

    class Count(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            saves.append(state.global_step)

    result = run(over, tmp_path, callbacks=(Count(),))
    assert saves == [1, 2]   # step 1 by save_every_steps; step 2 once, by the epoch end
    assert ckpts(Path(result["run_dir"])) == ["checkpoint-1", "checkpoint-2"]


def test_status_json_and_stale_tmp_files(tmp_path, capsys):
    over = [*OVER, "trainer.epochs=1"]
    run_dir = Path(spec_for(over, tmp_path).run_dir)
    stale = run_dir / "checkpoints" / ".result.json.999999.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_text("half")
    seen = {}

    class Peek(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen.update(json.loads((run_dir / "status.json").read_text()))

    run(over, tmp_path, callbacks=(Peek(),))
    assert f"removed {stale}" in capsys.readouterr().out and not stale.exists()
    assert seen["status"] == "running" and seen["pid"] == os.getpid()
    assert seen["host"] == socket.gethostname() and seen["started"] and seen["updated"]
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"
    assert not (run_dir / "run.lock").exists()


def test_full_disk_during_a_checkpoint_names_the_disk(tmp_path, monkeypatch):
    import torch

    from tasks.cluster.status import DiskFull

    def full(*args, **kwargs):  # what torch.save raises when the disk fills mid-write
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full)
    over = [*OVER, "trainer.epochs=1"]
    with pytest.raises(DiskFull) as error:
        run(over, tmp_path)
    message = str(error.value)
    assert "\n" not in message and "disk full" in message and "checkpoint-2" in message
    assert "mounted at /" in message
    status = json.loads((Path(spec_for(over, tmp_path).run_dir) / "status.json").read_text())
    assert status["status"] == "failed" and "disk full" in status["error"]


def test_enospc_names_the_path():
    import errno

    from tasks.cluster.status import disk_full

    error = disk_full(OSError(errno.ENOSPC, "No space left on device", "/tmp/x/result.json"), Path("/tmp"))
    assert "/tmp/x/result.json" in str(error) and "mounted at /" in str(error)
    assert disk_full(ValueError("no"), Path("/tmp")) is None


HOLD = """
import sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from tasks.cluster.runlock import acquire
acquire(Path({run_dir!r}))
print("held", flush=True)
time.sleep(600)
"""


def test_second_trainer_on_a_held_run_exits_naming_the_holder(tmp_path, capsys):
    from tasks.cluster.runlock import RunLocked, acquire

    over = [*OVER, "trainer.epochs=1"]
    run_dir = Path(spec_for(over, tmp_path).run_dir)
    holder = subprocess.Popen([sys.executable, "-c", HOLD.format(root=str(ROOT), run_dir=str(run_dir))],
                              stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLocked) as locked:
            run(over, tmp_path)
        message = str(locked.value)
        assert f"pid {holder.pid} on {socket.gethostname()}" in message and "\n" not in message
        assert not (run_dir / "checkpoints").exists()   # it trained nothing
    finally:
        holder.kill()
        holder.wait()
    capsys.readouterr()
    result = run(over, tmp_path)   # the holder died: its lock is stale (same host, pid gone)
    assert f"from pid {holder.pid}" in capsys.readouterr().out and result["status"] == "completed"
    lock = acquire(run_dir)        # a finished run stays a no-op, lock or no lock
    try:
        assert run(over, tmp_path) == result
    finally:
        lock.release()


def test_lock_on_another_host_is_stale_only_without_heartbeat(tmp_path):
    from tasks.cluster import runlock

    path = tmp_path / runlock.LOCK
    path.write_text(json.dumps({"host": "node-elsewhere", "pid": 1, "started": time.time(), "token": "x"}))
    with pytest.raises(runlock.RunLocked, match="pid 1 on node-elsewhere"):
        runlock.acquire(tmp_path, stale_after_s=60)
    old = time.time() - 120
    os.utime(path, (old, old))   # no heartbeat for two minutes
    lock = runlock.acquire(tmp_path, stale_after_s=60)
    assert json.loads(path.read_text())["pid"] == os.getpid()
    lock.release()
    assert not path.exists()


def test_wait_for_a_held_run(tmp_path):
    import threading

    from tasks.cluster import runlock

    first = runlock.acquire(tmp_path)
    threading.Timer(0.3, first.release).start()
    second = runlock.acquire(tmp_path, wait=True, poll_s=0.05)   # returns once the first is released
    assert second.owned()
    second.release()


def test_breaking_a_stale_lock_is_race_free(tmp_path):
    """Two processes that read the same stale lock: only one may remove it; a fresh lock stays."""
    from tasks.cluster import runlock

    path = tmp_path / runlock.LOCK
    dead = {"host": socket.gethostname(), "pid": 2**22 + 7, "started": 0, "token": "dead"}
    path.write_text(json.dumps(dead))
    assert runlock._break(path, dead)            # the first breaker removes it
    fresh = runlock.acquire(tmp_path)
    assert not runlock._break(path, dead)        # the second one, late, finds a new holder: leaves it
    assert fresh.owned()
    fresh.release()
