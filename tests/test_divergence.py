"""A diverging run (learning rate 1e3: the loss turns NaN within the first epoch) stops at the first
non-finite loss or metric with one line, writes result.json with status ``diverged`` (strict JSON, no
metrics, no rank measured on NaN weights), and its rerun is a no-op instead of a loop."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from runs import ROOT, spec_for

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline",
       "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
OVER = ["task=glue/stsb", "peft=capaboost_lora", "trainer.epochs=2", "trainer.batch_size=1", "trainer.lr=1e3"]
TINY = ["model=tiny", "data=fixture", "logger=none", "trainer.progress=false", "data.train_limit=16",
        "data.eval_limit=8", "trainer.max_seq_length=48"]


def strict(text: str) -> dict:
    def refuse(name):
        raise ValueError(f"bare {name} in result.json")
    return json.loads(text, parse_constant=refuse)


def test_diverging_run_stops_with_status_diverged_and_its_rerun_is_a_no_op(tmp_path):
    command = [sys.executable, "run.py", *TINY, *OVER, f"runs_root={tmp_path}"]
    proc = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "LinAlgError" not in proc.stderr and "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("diverged:")]
    assert len(lines) == 1 and "eval_select_loss=nan at step 16" in lines[0], proc.stderr[-2000:]
    run_dir = Path(spec_for(OVER, tmp_path).run_dir)
    result = strict((run_dir / "result.json").read_text())
    assert result["status"] == "diverged" and result["metrics"] is None and result["best"] is None
    assert result["diverged"] == {"step": 16, "epoch": 1.0, "key": "eval_select_loss", "value": "nan"}
    assert result["rank"] is None and result["global_step"] == 16
    assert result["history"][0]["select"]["loss"] is None   # NaN as null: strict JSON
    assert json.loads((run_dir / "status.json").read_text())["status"] == "diverged"
    assert not (run_dir / "peft.safetensors").exists()
    assert not list((run_dir / "checkpoints").glob("checkpoint-*"))   # stopped before the NaN save

    again = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and f"already diverged: {run_dir / 'result.json'}" in again.stdout
    assert strict((run_dir / "result.json").read_text()) == result   # nothing re-ran

    tables = subprocess.run([sys.executable, "scripts/make_tables.py", "--runs", str(tmp_path), "--out",
                             str(tmp_path / "out"), "--no-figures"], cwd=ROOT, capture_output=True, text=True)
    assert tables.returncode == 0, tables.stderr
    assert "excluded 1 run(s) whose status is not 'completed' (1 diverged)" in tables.stdout


def test_non_finite_predictions_score_nan_not_zero():
    """Evaluation no longer maps a diverged model's NaN predictions to Pearson 0; constant ones stay 0."""
    from tasks.suites.metrics import glue_metrics

    gold = np.array([0.0, 1.0, 2.0, 3.0])
    nan = glue_metrics("stsb", np.array([0.1, math.nan, 2.0, 2.5]), gold)
    assert math.isnan(nan["pearson"]) and math.isnan(nan["spearman"])
    assert glue_metrics("stsb", np.full(4, 2.0), gold) == {"pearson": 0.0, "spearman": 0.0}


def test_divergence_inside_an_epoch_is_caught_at_the_next_training_log(tmp_path):
    """The logged training loss hides NaN steps (the Trainer averages them away); the weights do not."""
    from runs import run

    result = run([*OVER, "trainer.epochs=1", "trainer.logging_steps=1"], tmp_path)
    where = result["diverged"]
    assert result["status"] == "diverged" and where["key"].startswith("weight ") and where["value"] == "nan"
    assert 1 < where["step"] < 16   # within the epoch, before its evaluation
    run_dir = Path(result["run_dir"])
    assert strict((run_dir / "result.json").read_text())["diverged"] == where
    assert result["history"] == [] and result["epochs_evaluated"] == 0
