"""Device and precision: the choice table (torch's CUDA answers faked), and a GPU run on a CPU machine."""
from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest
import torch
from runs import ROOT, run

from tasks import device
from tasks.device import DeviceError, Placement, place

DRIVER_TOO_OLD = ("CUDA initialization: The NVIDIA driver on your system is too old (found version 11040). "
                  "Please update your GPU driver.")


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """A fake machine: set .cuda / .bf16 / .visible / .device_file, then call place()."""
    saved = torch.get_float32_matmul_precision()

    class Machine:
        cuda, bf16, visible, device_file, warning, slurm = False, False, None, False, None, None

    m = Machine()

    def is_available():
        if m.warning:
            warnings.warn(m.warning, stacklevel=1)
        return m.cuda

    monkeypatch.setattr(torch.cuda, "is_available", is_available)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: m.bf16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake GPU 80GB")
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: 123_456_789)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    for key in ("CUDA_VISIBLE_DEVICES", *device.SLURM_GPU_VARS):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(device, "NVIDIA_DEVICE", tmp_path / "nvidia0")

    def setup() -> Machine:
        if m.visible is not None:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", m.visible)
        if m.device_file:
            (tmp_path / "nvidia0").touch()
        if m.slurm is not None:
            monkeypatch.setenv("SLURM_GPUS_ON_NODE", m.slurm)
        return m

    m.setup = setup
    yield m
    torch.set_float32_matmul_precision(saved)


def trainer(device_: str = "auto", precision: str = "auto", use_cpu: bool = False) -> dict:
    return {"device": device_, "precision": precision, "use_cpu": use_cpu}


# (cuda available, native bf16, device, precision) -> (device used, precision used)
TABLE = [
    (True, True, "auto", "auto", "cuda", "bf16"),     # A100/H100: bf16
    (True, False, "auto", "auto", "cuda", "fp16"),    # V100/T4: fp16, as the official runs
    (True, False, "cuda", "fp32", "cuda", "fp32"),    # an explicit precision is kept
    (True, True, "cpu", "auto", "cpu", "fp32"),       # device=cpu on a GPU machine
    (False, False, "auto", "auto", "cpu", "fp32"),    # a laptop: CPU, fp32
    (False, False, "cpu", "bf16", "cpu", "bf16"),     # CPU autocast in bf16 exists
]


@pytest.mark.parametrize("cuda, bf16, dev, precision, used, used_precision", TABLE)
def test_choice_table(machine, cuda, bf16, dev, precision, used, used_precision):
    machine.cuda, machine.bf16 = cuda, bf16
    machine.setup()
    placement = place(trainer(dev, precision))
    assert (placement.device, placement.precision) == (used, used_precision)
    assert placement.name == ("Fake GPU 80GB" if used == "cuda" else "cpu")


def test_cuda_turns_tf32_on_and_records_peak_memory(machine, monkeypatch):
    torch.set_float32_matmul_precision("highest")
    machine.cuda = True
    machine.setup()
    placement = place(trainer())
    assert torch.get_float32_matmul_precision() == "high"  # TF32 for fp32 matmuls
    assert device.record(placement) == {"device": "Fake GPU 80GB", "precision": "fp16",
                                        "peak_gpu_memory_bytes": 123_456_789, "cuda_visible_devices": None}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")   # what Ray or SLURM gave the run
    assert device.record(Placement("cpu", "cpu", "fp32")) == {"device": "cpu", "precision": "fp32",
                                                              "cuda_visible_devices": "3"}


def test_use_cpu_still_means_cpu(machine):
    machine.cuda = True
    machine.setup()
    assert place(trainer(use_cpu=True)).device == "cpu"


def test_cuda_requested_without_cuda_fails_saying_why(machine):
    machine.warning = DRIVER_TOO_OLD
    machine.setup()
    with pytest.raises(DeviceError, match=r"trainer.device=cuda .*driver on your system is too old") as error:
        place(trainer("cuda"))
    assert "\n" not in str(error.value)


def test_cpu_only_torch_build_is_named(machine, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    machine.setup()
    with pytest.raises(DeviceError, match="CPU-only build"):
        place(trainer("cuda"))


@pytest.mark.parametrize("visible, device_file, slurm, refused", [
    ("0,1", False, None, True), ("GPU-3f2a", False, None, True), (None, True, None, True),
    (None, False, "1", True),  # a SLURM job given a GPU (what the launchers ask for)
    ("", True, None, False), ("-1", True, None, False), (None, False, None, False), (None, False, "0", False),
])
def test_auto_refuses_only_when_gpus_were_expected(machine, visible, device_file, slurm, refused):
    machine.visible, machine.device_file, machine.slurm = visible, device_file, slurm
    machine.setup()
    if refused:
        with pytest.raises(DeviceError, match=r"trainer.device=auto: (CUDA_VISIBLE|.*nvidia0|SLURM alloc)"):
            place(trainer())
    else:
        assert place(trainer()).device == "cpu"


def test_precisions_the_device_cannot_run_are_refused(machine):
    machine.setup()
    with pytest.raises(DeviceError, match="trainer.precision=fp16"):
        place(trainer(precision="fp16"))
    machine.cuda = True
    with pytest.raises(DeviceError, match="trainer.precision=bf16 .*Fake GPU"):
        place(trainer(precision="bf16"))


def test_cpu_run_records_device_and_precision(tmp_path):
    result = run(["trainer.max_steps=1"], tmp_path)
    assert (result["device"], result["precision"]) == ("cpu", "fp32")
    assert "peak_gpu_memory_bytes" not in result
    assert json.loads(next(tmp_path.rglob("result.json")).read_text())["device"] == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where torch has no CUDA")
def test_gpu_run_on_a_cpu_machine_stops_with_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "run.py", "task=glue/cola", "peft=capaboost_lora", "model=tiny", "data=fixture",
         "logger=none", "trainer.device=cuda", f"runs_root={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True)
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(errors) == 1 and errors[0].startswith("config error: trainer.device=cuda"), proc.stderr
    assert not list(tmp_path.rglob("*"))  # no run directory, no result.json
