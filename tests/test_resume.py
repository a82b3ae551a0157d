"""A run killed after a checkpoint resumes to the same numbers; a finished run is a no-op unless forced."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from runs import ROOT, run, spec_for
from safetensors.torch import load_file
from transformers import TrainerCallback

# Three epochs of two steps, dropout in the backbone and in the LoRA branches: the resumed run must
# restore weights, optimizer, scheduler, RNG and the per-epoch history to match.
OVERRIDES = ["task=glue/cola", "trainer.epochs=3", "peft.dropout=0.1"]


class Interrupted(Exception):
    pass


class StopAfterFirstSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        raise Interrupted(state.global_step)


def assert_same_run(a: dict, b: dict) -> None:
    assert len(a["history"]) == len(b["history"]) == 3
    for row_a, row_b in zip(a["history"], b["history"], strict=True):
        assert row_a["step"] == row_b["step"]
        for split in ("select", "report"):
            assert row_b[split] == pytest.approx(row_a[split], rel=1e-6, abs=1e-7), (row_a["step"], split)
    assert b["metrics"] == pytest.approx(a["metrics"]) and b["best"] == pytest.approx(a["best"])
    assert b["best_epoch"] == a["best_epoch"] and b["global_step"] == a["global_step"] == 6
    wa, wb = (load_file(str(Path(r["run_dir"]) / "peft.safetensors")) for r in (a, b))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert (wa[key] - wb[key]).abs().max().item() < 1e-6, key


def checkpoints(spec) -> list[str]:
    return sorted(p.name for p in (Path(spec.run_dir) / "checkpoints").glob("checkpoint-*"))


def test_killed_process_resumes_to_the_uninterrupted_result(tmp_path):
    over = [*OVERRIDES, "peft=capaboost_lora"]
    full = run(over, tmp_path / "a")
    assert full["resumed_from"] is None

    # A separate process that dies hard (no cleanup, like a kill) right after its first checkpoint.
    script = (f"import os, sys; sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]\n"
              "from transformers import TrainerCallback\nfrom runs import run\n"
              "class Die(TrainerCallback):\n"
              "    def on_save(self, args, state, control, **kw):\n        os._exit(17)\n"
              f"run({over!r}, __import__('pathlib').Path({str(tmp_path / 'b')!r}), callbacks=(Die(),))\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 17, proc.stderr[-2000:]
    spec = spec_for(over, tmp_path / "b")
    assert not (Path(spec.run_dir) / "result.json").exists()
    assert checkpoints(spec) == ["checkpoint-2"]

    resumed = run(over, tmp_path / "b")
    assert resumed["resumed_from"].endswith("checkpoint-2")
    assert_same_run(full, resumed)


def test_interrupted_prefix_run_resumes_to_the_same_result(tmp_path):
    """Prefix tuning trains inside PEFT's wrapper: its checkpoint must still round-trip."""
    # the prefix has no dropout of its own (CapaBoostConfig refuses one); the backbone's remains
    over = [o for o in OVERRIDES if not o.startswith("peft.dropout")] + ["peft=capaboost_prefix"]
    full = run(over, tmp_path / "a")
    with pytest.raises(Interrupted):
        run(over, tmp_path / "b", callbacks=(StopAfterFirstSave(),))
    spec = spec_for(over, tmp_path / "b")
    assert not (Path(spec.run_dir) / "result.json").exists() and checkpoints(spec) == ["checkpoint-2"]
    resumed = run(over, tmp_path / "b")
    assert resumed["resumed_from"].endswith("checkpoint-2")
    assert_same_run(full, resumed)


def test_checkpoints_hold_only_trainable_tensors(tmp_path):
    over = [*OVERRIDES, "peft=capaboost_lora", "trainer.epochs=1"]
    result = run(over, tmp_path)
    (ckpt,) = (Path(result["run_dir"]) / "checkpoints").glob("checkpoint-*")
    saved = load_file(str(ckpt / "model.safetensors"))
    assert saved and all(k.startswith("model.") for k in saved)
    names = {k.removeprefix("model.") for k in saved}
    assert all(".lora_" in n or n.startswith("classifier.") for n in names), sorted(names)
    assert sum(t.numel() for t in saved.values()) == result["params"]["trainable"]


def test_finished_run_is_a_no_op_unless_forced(tmp_path, capsys):
    over = [*OVERRIDES, "peft=lora", "trainer.epochs=1"]
    first = run(over, tmp_path)
    path = Path(first["run_dir"]) / "result.json"
    capsys.readouterr()
    again = run(over, tmp_path)
    out = capsys.readouterr().out
    assert "already completed" in out and str(path) in out and "done " not in out
    assert again == first == json.loads(path.read_text())  # same content: nothing re-ran
    forced = run([*over, "force=true"], tmp_path)
    out = capsys.readouterr().out
    assert "already completed" not in out and out.strip().splitlines()[-1].startswith("done glue/cola")
    assert forced["run_dir"] == first["run_dir"] and forced["resumed_from"] is None
    assert json.loads(path.read_text()) == forced
    for row_a, row_b in zip(first["history"], forced["history"], strict=True):
        assert row_b["report"] == pytest.approx(row_a["report"], rel=1e-6)


def test_resume_skips_a_checkpoint_the_trainer_did_not_finish(tmp_path):
    from tasks.cluster.checkpoints import last_complete_checkpoint, write_marker

    assert last_complete_checkpoint(tmp_path / "missing") is None
    for step, complete in [(2, True), (10, True), (12, False), (9, True)]:
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"")
        (folder / "trainer_state.json").write_text("{}")  # the Trainer's last file: no proof on its own
        if complete:
            write_marker(folder, step)
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")  # numeric, not text order
