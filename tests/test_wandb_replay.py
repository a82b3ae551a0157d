"""W&B rows that a SIGKILL did not let W&B write are logged again on resume, from the checkpoint's own log
history: the merged history of the killed and the resumed segment equals the uninterrupted run's.

The run is killed (SIGKILL to its process group: the trainer and W&B's service) right after
checkpoint-4 is complete. Whatever W&B had not yet written is lost; to make that loss certain, and not
a matter of timing, the killed segment's file is then cut back to its header, as if W&B had written
nothing at all (the issue's case: a kill 0.15 s after a checkpoint lost the whole first epoch)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from runs import ROOT, run, spec_for
from test_faults import ENV, OVER, wandb_axis

KILL = """
import os, signal, sys
from pathlib import Path
sys.path[:0] = [{root!r}, {tests!r}]
from transformers import TrainerCallback
from runs import run

class Kill(TrainerCallback):
    def on_save(self, args, state, control, **kw):   # after the marker: checkpoint-4 is complete
        if state.global_step == 4:
            os.killpg(os.getpgid(0), signal.SIGKILL)

run([*{over!r}, "logger=wandb"], Path({out!r}), callbacks=(Kill(),))
"""


def test_rows_lost_to_a_sigkill_are_replayed_from_the_checkpoint(tmp_path):
    reference = run([*OVER, "logger=wandb"], tmp_path / "reference")
    killed = tmp_path / "killed"
    script = KILL.format(root=str(ROOT), tests=str(ROOT / "tests"), over=OVER, out=str(killed))
    proc = subprocess.run([sys.executable, "-c", script], env=ENV, cwd=ROOT, capture_output=True, text=True,
                          timeout=300, start_new_session=True)
    assert proc.returncode == -9, proc.stderr[-3000:]
    run_dir = Path(spec_for(OVER, killed).run_dir)
    (segment,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    segment.write_bytes(segment.read_bytes()[:7])   # the header only: every row of segment 1 is lost
    saved = json.loads((run_dir / "checkpoints" / "checkpoint-4" / "wandb_step.json").read_text())
    assert saved["global_step"] == 4 and saved["step"] > 0

    resumed = run([*OVER, "logger=wandb"], killed)
    assert resumed["resumed_from"].endswith("checkpoint-4")
    axis, finished = wandb_axis(run_dir)
    ref_axis, _ = wandb_axis(Path(reference["run_dir"]))
    assert finished == [False, True]
    assert [a[:2] for a in axis] == [r[:2] for r in ref_axis] and len(axis) > saved["step"]
    for got, want in zip(axis, ref_axis, strict=True):
        assert (got[2] is None) == (want[2] is None)
        assert got[2] is None or abs(got[2] - want[2]) <= 1e-6 * abs(want[2])
    assert os.path.exists(run_dir / "result.json")
