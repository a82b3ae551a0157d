"""SLURM through hydra-submitit-launcher, without a cluster; submitit_local really runs two tiny jobs.

The resubmission contract: on preemption/time-out submitit calls the launcher's `checkpoint`, which
re-submits the same call (same overrides). The run directory is a function of the config, so the
resubmitted job lands in the same directory and run.py resumes there.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import submitit
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from submitit.slurm.slurm import SlurmExecutor

from tasks import CONF
from tasks.config.runspec import register, resolve

ROOT = Path(__file__).resolve().parents[1]


class Submitted(Exception):
    """Raised instead of calling sbatch: carries the batch script submitit wrote."""


def slurm_cfg(tmp_path: Path, *extra: str):
    register()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=["sweep=squad", "hydra/launcher=slurm",
                                            f"hydra.sweep.dir={tmp_path / 'sweep'}", *extra],
                       return_hydra_config=True)


def make_launcher(cfg):
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert params.pop("_target_").endswith("SlurmLauncher")
    launcher = SlurmLauncher(**params)
    launcher.config = cfg
    return launcher


def test_slurm_config_keys(tmp_path: Path) -> None:
    launcher = slurm_cfg(tmp_path).hydra.launcher
    for key in ("partition", "gpus_per_node", "cpus_per_task", "mem_gb", "timeout_min", "array_parallelism"):
        assert key in launcher
    assert launcher.max_num_timeout >= 1  # the plugin's default 0 would never requeue after a time-out


def test_slurm_batch_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plugin + submitit turn slurm.yaml into an sbatch array script; sbatch itself is not called."""
    cfg = slurm_cfg(tmp_path, "hydra.launcher.partition=gpu", "hydra.launcher.array_parallelism=1")
    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 2))

    def fake_submit(self, command):
        raise Submitted(self._make_submission_file_text(command, "uid"))

    monkeypatch.setattr(SlurmExecutor, "_submit_command", fake_submit)
    runs = [["task=squad/v1", "seed=42"], ["task=squad/v2", "seed=42"]]
    with pytest.raises(Submitted) as info:
        make_launcher(cfg).launch(runs, initial_job_idx=0)
    script = str(info.value)
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --mem=64GB", "#SBATCH --time=720", "#SBATCH --array=0-1%1",
                 "#SBATCH --signal=USR2@120", "#SBATCH --job-name=squad"):  # the sweep's name, not `run`
        assert line in script, f"{line} not in\n{script}"
    # each array task's pickled call: this launcher, the run's overrides, 5 time-out requeues allowed
    pickles = sorted((tmp_path / "sweep" / ".submitit").rglob("*.pkl"))
    assert len(pickles) == 2
    calls = [submitit.helpers.DelayedSubmission.load(p) for p in pickles]
    assert sorted(c.args[0] for c in calls) == sorted(runs)
    assert {c._timeout_countdown for c in calls} == {5}


def test_job_name_without_a_sweep_file(tmp_path: Path) -> None:
    register()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm_ddp"], return_hydra_config=True)
    assert OmegaConf.to_container(cfg.hydra.launcher, resolve=True)["name"] == "capaboost"


def test_checkpoint_resubmits_the_same_run(tmp_path: Path) -> None:
    cfg = slurm_cfg(tmp_path)
    launcher = make_launcher(cfg)
    args = (["task=squad/v1", "peft=lora", "seed=43"], "hydra.sweep.dir", 0, "job_id_for_0", {})
    again = launcher.checkpoint(*args)
    assert isinstance(again, submitit.helpers.DelayedSubmission)
    assert again.function is launcher and again.args == args
    # ... and the same overrides compose to the same run directory (where run.py resumes)
    with initialize_config_dir(str(CONF), version_base="1.3"):
        dirs = {resolve(compose("config", overrides=["sweep=squad", *args[0]])).run_dir for _ in range(2)}
    assert len(dirs) == 1


@pytest.mark.slow
def test_submitit_local_multirun_writes_two_results(tmp_path: Path) -> None:
    runs_root = tmp_path / "runs"
    overrides = ["model=tiny", "data=fixture", "task=glue/rte", "trainer.max_steps=2",
                 "trainer.progress=false", "data.eval_limit=16", "logger=none", f"runs_root={runs_root}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), "-m", "hydra/launcher=submitit_local",
                           f"hydra.sweep.dir={tmp_path / 'sweep'}", "peft=lora,capaboost_lora", *overrides],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = sorted(runs_root.rglob("result.json"))
    assert len(results) == 2
    data = [json.loads(p.read_text()) for p in results]
    assert {d["peft"] for d in data} == {"lora", "capaboost_lora"}
    assert all(d["status"] == "completed" for d in data)
    # the run dirs are the ones the config predicts: a resubmitted job finds them again
    register()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        want = {str(Path(resolve(compose("config", overrides=[f"peft={p}", *overrides])).run_dir))
                for p in ("lora", "capaboost_lora")}
    assert {str(p.parent) for p in results} == want
    assert list((tmp_path / "sweep" / ".submitit").iterdir())  # the jobs went through submitit
