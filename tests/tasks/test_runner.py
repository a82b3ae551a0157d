"""tasks/runner.py: a finished run asked for again trains nothing and records the sweep that asked."""
from __future__ import annotations

import json
import os

from tasks.runner import reuse_result


def test_a_reused_run_lists_every_sweep_that_asked_for_it_once(tmp_path):
    path = tmp_path / "result.json"
    path.write_text(json.dumps({"status": "done", "sweeps": ["glue_roberta_base"], "metrics": {"m": .5}}))
    reuse_result(path, "fig1_rank_params")
    reuse_result(path, "fig1_rank_params")
    reuse_result(path, "glue_roberta_base")
    data = json.loads(path.read_text())
    assert data["sweeps"] == ["glue_roberta_base", "fig1_rank_params"]
    assert data["metrics"] == {"m": .5} and not list(tmp_path.glob(".*.tmp"))


def test_a_reused_run_without_a_sweep_keeps_its_bytes_and_moves_its_mtime(tmp_path):
    path = tmp_path / "result.json"
    text = json.dumps({"status": "completed", "metrics": {"accuracy": 0.75}})
    path.write_text(text)
    os.utime(path, (1_000_000, 1_000_000))
    assert reuse_result(path, None)["metrics"] == {"accuracy": 0.75}
    assert path.read_text() == text and path.stat().st_mtime > 1_000_000
