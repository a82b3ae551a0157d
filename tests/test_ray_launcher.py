"""hydra/launcher=ray on CPUs: a local Ray with 2 declared GPUs, tiny runs on trainer.device=cpu.

One Ray cluster is started here for the module (Ray's start is the slow part); each test's driver is a real
``python run.py -m ... hydra/launcher=ray`` that attaches to it. The oracles are independent of the launcher:
the sequential runner's results (same run directories, same metrics), what each run recorded itself
(result.json, status.json, its log), and the processes the test kills.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runs import ROOT, TINY, run

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
RUN = [*TINY, "task=glue/rte", "trainer.device=cpu"]


@pytest.fixture(scope="module")
def cluster():
    """A local Ray with 2 CPUs and 2 declared GPUs, shared by the module's drivers (its address)."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
    for s, handler in handlers.items():   # ray.init's SIGTERM handler would outlive this module
        signal.signal(s, handler)


def launch(cluster: str, sweep_dir: Path, *overrides: str, wait: bool = True):
    cmd = [sys.executable, str(ROOT / "run.py"), "-m", *RUN, *overrides, "hydra/launcher=ray",
           f"hydra.launcher.ray.init.address={cluster}", f"hydra.sweep.dir={sweep_dir}",
           "hydra.launcher.poll_s=0.2"]
    env = {**os.environ, **OFFLINE}   # as ray.init left it: how to authenticate to the cluster
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    if not wait:
        return proc
    out, _ = proc.communicate(timeout=900)
    return proc.returncode, out


def summary(sweep_dir: Path, out: str = "") -> list[dict]:
    found = list(sweep_dir.glob("ray/*/summary.json"))
    assert len(found) == 1, out[-3000:]
    return json.loads(found[0].read_text())


def results(root: Path) -> dict[str, dict]:
    """result.json of every run under ``root``, by run directory relative to it."""
    return {str(p.parent.relative_to(root)): json.loads(p.read_text()) for p in root.rglob("result.json")}


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    now = peak = 0
    for _, step in events:   # an end sorts before a start at the same instant
        now += step
        peak = max(peak, now)
    return peak


def same_numbers(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"] and len(a["history"]) == len(b["history"])
    for row_a, row_b in zip(a["history"], b["history"], strict=True):
        for split in ("select", "report"):
            assert row_b[split] == pytest.approx(row_a[split], rel=1e-6, abs=1e-7)
    assert b["metrics"] == pytest.approx(a["metrics"]) and b["best"] == pytest.approx(a["best"])


def test_four_runs_two_at_a_time_on_their_own_gpus_equal_to_sequential(cluster, tmp_path):
    root = tmp_path / "runs"
    rc, out = launch(cluster, tmp_path / "sweep", f"runs_root={root}", "seed=1,2,3,4")
    assert rc == 0, out[-3000:]
    got = results(root)
    assert len(got) == 4
    # at most 2 Ray tasks at once (the 2 declared GPUs), and runs that overlapped saw different GPUs
    rows = summary(tmp_path / "sweep", out)
    assert [r["state"] for r in rows] == ["done"] * 4 and all(r["attempts"] == 1 for r in rows)
    assert most_at_once([(r["started"], r["ended"]) for r in rows]) == 2
    by_seed = {r["seed"]: r for r in got.values()}
    for a in rows:
        for b in rows:
            if a is not b and a["started"] < b["ended"] and b["started"] < a["ended"]:
                sa, sb = (int(x["name"].split("=")[1]) for x in (a, b))
                assert by_seed[sa]["cuda_visible_devices"] != by_seed[sb]["cuda_visible_devices"]
    assert {r["cuda_visible_devices"] for r in got.values()} == {"0", "1"}
    # one line per finished run in the driver's output, and no progress bars
    assert sum(line.startswith("[") and "] done" in line for line in out.splitlines()) == 4
    assert "it/s]" not in out
    # the sequential runner writes the same run directories with the same numbers
    ref_root = tmp_path / "sequential"
    for seed in (1, 2, 3, 4):
        run([*RUN, f"seed={seed}"], ref_root)
    ref = results(ref_root)
    assert sorted(ref) == sorted(got)
    for key in ref:
        same_numbers(ref[key], got[key])


def test_a_run_asking_for_more_gpus_than_the_cluster_has_stops_the_launch_in_one_line(cluster, tmp_path):
    rc, out = launch(cluster, tmp_path / "sweep", f"runs_root={tmp_path / 'runs'}", "seed=1,2",
                     "hydra.launcher.ray.remote.num_gpus=3")
    assert rc == 2, out[-3000:]
    assert "config error: each run asks for 3 GPU (hydra.launcher.ray.remote.num_gpus) but the Ray cluster " \
           "has 2" in out and "Traceback" not in out
    assert not (tmp_path / "runs").exists() and not (tmp_path / "sweep" / "ray").exists()


def test_a_config_error_is_tried_once_and_named_while_the_other_run_finishes(cluster, tmp_path):
    root = tmp_path / "runs"
    # grad_accum=3 does not divide the batch of 8: a config error (exit 2) in that run only
    rc, out = launch(cluster, tmp_path / "sweep", f"runs_root={root}", "seed=5", "trainer.grad_accum=1,3")
    assert rc == 1, out[-3000:]
    rows = {r["name"]: r for r in summary(tmp_path / "sweep", out)}
    bad, good = rows["trainer.grad_accum=3"], rows["trainer.grad_accum=1"]
    assert (bad["state"], bad["attempts"], bad["rc"]) == ("failed", 1, 2)
    assert good["state"] == "done" and len(results(root)) == 1
    assert Path(bad["log"]).read_text().count("config error: trainer.grad_accum=3") == 1   # one attempt
    line = [ln for ln in out.splitlines() if ln.startswith("  failed trainer.grad_accum=3:")]
    assert line and "must divide the batch size" in line[0]


def test_a_worker_killed_mid_training_is_retried_and_resumes(cluster, tmp_path):
    over = ["seed=7", "trainer.epochs=3", "data.train_limit=32"]   # 3 epochs of 4 steps
    root = tmp_path / "runs"
    proc = launch(cluster, tmp_path / "sweep", f"runs_root={root}", *over, wait=False)
    deadline = time.time() + 600
    status = None
    while time.time() < deadline and proc.poll() is None:
        found = list(root.rglob("status.json"))
        if found:
            status = json.loads(found[0].read_text() or "{}")
            if status.get("status") == "running" and status.get("step"):   # a complete checkpoint exists
                break
        time.sleep(0.05)
    assert status and status.get("step"), proc.communicate()[0][-3000:]
    worker = int(Path(f"/proc/{status['pid']}/stat").read_text().rsplit(")", 1)[1].split()[1])   # its parent
    assert "ray::" in Path(f"/proc/{worker}/cmdline").read_text() or "default_worker" in \
        Path(f"/proc/{worker}/cmdline").read_text()
    os.kill(worker, signal.SIGKILL)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:]
    assert "lost (" in out and "starting it again" in out
    (row,) = summary(tmp_path / "sweep", out)
    assert (row["state"], row["attempts"]) == ("done", 2)
    # the retry resumed from a checkpoint (the one the SIGTERM of its worker's death saved, or the last
    # complete one when that signal came too late: its timing varies on a loaded machine)
    log = Path(row["log"]).read_text()
    assert "checkpoint-" in log and ("resume continues from" in log or "resuming from" in log), log[-3000:]
    (resumed,) = results(root).values()
    assert resumed["resumed_from"] and "checkpoint-" in resumed["resumed_from"]
    same_numbers(run([*RUN, *over], tmp_path / "uninterrupted"), resumed)


def test_the_same_sweep_launched_twice_at_once_trains_each_run_once(cluster, tmp_path):
    root = tmp_path / "runs"
    procs = [launch(cluster, tmp_path / f"sweep{i}", f"runs_root={root}", "seed=11,12", wait=False)
             for i in range(2)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    states: dict[str, list[str]] = {}
    for i in range(2):
        for row in summary(tmp_path / f"sweep{i}"):
            states.setdefault(row["name"], []).append(row["state"])
    assert sorted(states) == ["seed=11", "seed=12"]
    for name, seen in states.items():   # trained once; the other launch found it held or finished
        assert seen.count("done") == 1 and set(seen) <= {"done", "held", "skipped"}, (name, seen)
    got = results(root)
    assert len(got) == 2 and all(r["resumed_from"] is None for r in got.values())


def test_sigterm_on_the_driver_stops_the_runs_with_a_checkpoint(cluster, tmp_path):
    """Each run holds both GPUs, so one trains and one waits; on SIGTERM the first saves a checkpoint and
    stops, the second never starts, and the driver exits 128+15."""
    root = tmp_path / "runs"
    over = [f"runs_root={root}", "seed=21,22", "trainer.epochs=40", "hydra.launcher.ray.remote.num_gpus=2"]
    proc = launch(cluster, tmp_path / "sweep", *over, wait=False)
    deadline, status = time.time() + 600, {}
    while time.time() < deadline and proc.poll() is None and not status.get("step"):
        found = list(root.rglob("status.json"))
        status = json.loads(found[0].read_text() or "{}") if found else {}
        time.sleep(0.05)
    assert status.get("step"), proc.communicate()[0][-3000:]
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    assert "caught SIGTERM" in out
    rows = summary(tmp_path / "sweep", out)
    assert sorted(r["state"] for r in rows) == ["stopped", "stopped"] and not results(root)
    (run_dir,) = [p.parent for p in root.rglob("status.json")]   # the second run never started
    stopped = json.loads((run_dir / "status.json").read_text())
    assert (stopped["status"], stopped["signal"]) == ("preempted", "SIGTERM") and stopped["step"] > 0
    assert (run_dir / "checkpoints" / f"checkpoint-{stopped['step']}").is_dir()
    assert not any(Path(r["log"]).exists() for r in rows if r["rc"] is None)
