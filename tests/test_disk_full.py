"""A disk that fills up mid-run: the checkpoint write fails (safetensors' or torch.save's own error, not an
OSError), the run stops with one line naming the path, the mount and "no space left", status.json ends
``failed`` with that reason even though the disk has no room for its usual atomic copy, and once space
is freed the same command resumes from the last complete checkpoint to the uninterrupted numbers.

Planted on a real 4 MiB tmpfs where the test may mount one (root), else by making the checkpoint's
safetensors write raise what it raises on a full disk."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from runs import run, spec_for
from test_resume import OVERRIDES, assert_same_run
from transformers import TrainerCallback

OVER = [*OVERRIDES, "peft=capaboost_lora"]


@pytest.fixture
def tmpfs(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                                           capture_output=True).returncode:
        pytest.skip("needs root to mount a tmpfs (the patched variant covers the same path)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


class FillAfterSave(TrainerCallback):
    """Once checkpoint-``step`` is complete, fill the disk to the last byte: the next save fails."""

    def __init__(self, disk: Path, step: int = 2) -> None:
        self.disk, self.step, self.filler = disk, step, disk / f"filler-{uuid.uuid4().hex}"

    def on_save(self, args, state, control, **kwargs):
        if state.global_step != self.step:
            return
        with open(self.filler, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError as error:
                assert error.errno == errno.ENOSPC


class FailNextSafetensors(TrainerCallback):
    """Without a tmpfs: the next safetensors write raises what it raises on a full disk."""

    def __init__(self, monkeypatch, step: int = 2) -> None:
        self.monkeypatch, self.step = monkeypatch, step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            import safetensors.torch

            def full(*a, **k):
                raise safetensors.SafetensorError(
                    "Error while serializing: I/O error: No space left on device (os error 28)")
            self.monkeypatch.setattr(safetensors.torch, "save_file", full)


def check_failed_then_resume(runs: Path, plant: TrainerCallback, undo, reference: dict, mount: str) -> None:
    from tasks.cluster.status import DiskFull

    with pytest.raises(DiskFull) as error:
        run(OVER, runs, callbacks=(plant,))
    run_dir = Path(spec_for(OVER, runs).run_dir)
    message = str(error.value)
    assert "\n" not in message and "no space left" in message
    assert str(run_dir / "checkpoints" / "checkpoint-4") in message and f"mounted at {mount}" in message
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and "no space left" in status["error"]
    assert not (run_dir / "result.json").exists()
    undo()
    resumed = run(OVER, runs)
    assert resumed["resumed_from"].endswith("checkpoint-2")
    assert_same_run(reference, resumed)
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    return run(OVER, tmp_path_factory.mktemp("reference"))


def test_full_tmpfs_mid_run(tmpfs, reference):
    fill = FillAfterSave(tmpfs)
    check_failed_then_resume(tmpfs / "runs", fill, lambda: fill.filler.unlink(), reference, str(tmpfs))


def test_full_disk_as_safetensors_reports_it(tmp_path, monkeypatch, reference):
    check_failed_then_resume(tmp_path / "runs", FailNextSafetensors(monkeypatch), monkeypatch.undo, reference,
                             "/")


def test_status_json_written_in_place_when_no_room_for_a_copy(tmp_path, monkeypatch, capsys):
    """The atomic write needs a second file; on a full disk status.json is overwritten in place, and
    when even that fails the status goes to stderr."""
    import tasks.files
    from tasks.cluster import status as run_status

    status = run_status.Status(tmp_path)
    status.write("running")

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(run_status, "write_text", lambda path, text: full(path, text))
    status.write("failed", error="DiskFull: no space left")
    assert json.loads((tmp_path / "status.json").read_text())["status"] == "failed"
    (tmp_path / "status.json").unlink()
    (tmp_path / "status.json").mkdir()   # now nothing can be written there at all
    status.write("failed", error="DiskFull: no space left")
    err = capsys.readouterr().err
    assert f"could not write {tmp_path / 'status.json'}" in err and "status is failed: DiskFull" in err
    assert tasks.files.write_text  # the real writer is untouched
