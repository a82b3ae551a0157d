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


def test_adding_a_sweep_waits_for_the_run_lock_and_keeps_what_the_holder_wrote(tmp_path):
    """Two sweeps reusing one run at once: the second append happens under the lock, on a fresh read."""
    import threading

    from tasks.cluster import runlock

    path = tmp_path / "result.json"
    path.write_text(json.dumps({"status": "completed", "sweeps": []}))
    held = runlock.acquire(tmp_path)
    worker = threading.Thread(target=reuse_result, args=(path, "fig4_r_by_d"))
    worker.start()
    worker.join(timeout=1.5)
    assert worker.is_alive() and json.loads(path.read_text())["sweeps"] == []  # waits for the holder
    path.write_text(json.dumps({"status": "completed", "sweeps": ["fig3_masks"]}))  # the holder's append
    held.release()
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert json.loads(path.read_text())["sweeps"] == ["fig3_masks", "fig4_r_by_d"]
    assert not (tmp_path / runlock.LOCK).exists()
