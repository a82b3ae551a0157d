"""`make status`: every run of a sweep as done / running / dead / failed / missing, planted for real on a
tiny five-seed slice of a paper sweep (a finished run, a live holder, a run SIGKILLed mid-training, a run
that failed (out of memory), one never launched), and a relaunch command that Hydra's own expansion
turns into exactly the runs that need it."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from runs import ROOT, TINY
from test_faults import ENV
from test_lifecycle_faults import hold
from transformers import TrainerCallback

SWEEP = "fig3_masks"
SLICE = [*TINY, "task=glue/cola", "mask=random", "density=0.5", "seed=42,43,44,45,46",
         "trainer.precision=fp32"]  # the paper sweeps ask for the authors' fp16, a GPU's: CPU here

KILLED = """
import os, sys
sys.path[:0] = [{root!r}]
from transformers import TrainerCallback
from tasks.runner import execute
from tasks.config.sweeps import compose_runs

class Die(TrainerCallback):   # SIGKILL once a checkpoint is complete: nothing is cleaned up
    def on_save(self, args, state, control, **kw):
        if state.global_step == 2:
            os.kill(os.getpid(), 9)

spec = next(s for ov, s in compose_runs({sweep!r}, {args!r}) if "seed=44" in ov)
execute(spec, callbacks=(Die(),))
"""


def status(args: list[str], root: Path) -> list[str]:
    proc = subprocess.run([sys.executable, "scripts/status.py", SWEEP, "--runs", str(root), *args],
                          capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.splitlines()


def test_status_of_a_sweep_and_its_relaunch_command(tmp_path):
    from tasks.config.sweeps import compose_runs, expand
    from tasks.runner import execute

    args = [*SLICE, "trainer.epochs=2", f"runs_root={tmp_path}"]
    specs = {ov[-1] if ov[-1].startswith("seed") else next(o for o in ov if o.startswith("seed=")): spec
             for ov, spec in compose_runs(SWEEP, args)}
    assert sorted(specs) == [f"seed={s}" for s in range(42, 47)]
    done = execute(dataclasses.replace(specs["seed=42"], sweep="glue_roberta_base"))  # by another sweep
    killed = subprocess.run([sys.executable, "-c", KILLED.format(root=str(ROOT), sweep=SWEEP, args=args)],
                            capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    dead_dir = Path(specs["seed=44"].run_dir)
    assert json.loads((dead_dir / "status.json").read_text())["status"] == "running"  # what it left
    class OutOfMemory(TrainerCallback):   # what a GPU out-of-memory error looks like to the runner
        def on_step_begin(self, args, state, control, **kwargs):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(RuntimeError, match="out of memory"):
        execute(specs["seed=45"], callbacks=(OutOfMemory(),))
    holder = hold(Path(specs["seed=43"].run_dir))
    try:
        lines = status([*SLICE, "trainer.epochs=2"], tmp_path)
    finally:
        holder.kill()
        holder.wait()
    text = "\n".join(lines)
    assert lines[1].split() == ["done", "1", "·", "running", "1", "·", "dead", "1", "·", "failed", "1", "·",
                                "missing", "1"], text
    by_state = {ln.split()[0]: ln for ln in lines if ln.split()[0] in ("done", "running", "dead", "failed",
                                                                      "missing") and "seed=" in ln}
    assert "seed=42" in by_state["done"] and "seed=43" in by_state["running"]
    assert "seed=44" in by_state["dead"] and "seed=45" in by_state["failed"]
    assert "seed=46" in by_state["missing"]
    detail = {ln.split()[0]: lines[i + 2].strip() for i, ln in enumerate(lines) if ln in by_state.values()}
    assert f"pid {holder.pid}" in detail["running"]
    assert "its lock is stale" in detail["dead"] and "no longer exists" in detail["dead"]  # the SIGKILL
    assert "last checkpoint at step 2" in detail["dead"]
    assert detail["failed"].startswith("RuntimeError: CUDA out of memory")
    assert "not yet in fig3_masks's tables" in text    # seed 42 was finished by another sweep
    command = lines[-1].split()
    assert command[:4] == ["python", "run.py", "-m", f"sweep={SWEEP}"]
    # the command, expanded by Hydra's sweeper as run.py -m would: exactly seeds 42 (its name), 44, 45, 46
    relaunched = expand(SWEEP, [a for a in command[4:] if not a.startswith("sweep=")])
    seeds = sorted(o for ov in relaunched for o in ov if o.startswith("seed="))
    assert seeds == ["seed=42", "seed=44", "seed=45", "seed=46"]
    dirs = {spec.run_dir for ov, spec in compose_runs(SWEEP, command[4:])}
    assert dirs == {specs[s].run_dir for s in seeds}
    assert done["status"] == "completed"


def test_status_names_a_sweep_that_does_not_exist():
    proc = subprocess.run([sys.executable, "scripts/status.py", "nope"], capture_output=True, text=True,
                          env={**os.environ, **ENV}, cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and "no sweep 'nope'" in proc.stderr and "\n" not in proc.stderr.strip()
