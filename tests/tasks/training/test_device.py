"""Device and precision: the choice table (torch's CUDA answers faked), and a GPU run on a CPU machine."""
from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest
import torch
from runs import ROOT, run

from tasks.training import device
from tasks.training.device import DeviceError, Placement, place

DRIVER_TOO_OLD = ("CUDA initialization: The NVIDIA driver on your system is too old (found version 11040). "
                  "Please update your GPU driver.")


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """A fake machine: set .cuda / .bf16 / .visible / .device_file, then call place()."""
    saved = torch.get_float32_matmul_precision()

    class Machine:
        cuda, bf16, visible, device_file, warning, slurm, driver = False, False, None, False, None, None, None

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
    monkeypatch.setattr(device, "NVIDIA_DRIVER", tmp_path / "driver_version")
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi: the driver is what the file says

    def setup() -> Machine:
        if m.visible is not None:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", m.visible)
        if m.device_file:
            (tmp_path / "nvidia0").touch()
        if m.slurm is not None:
            monkeypatch.setenv("SLURM_GPUS_ON_NODE", m.slurm)
        if m.driver:  # what /proc/driver/nvidia/version says on a node with that driver loaded
            (tmp_path / "driver_version").write_text(
                f"NVRM version: NVIDIA UNIX x86_64 Kernel Module  {m.driver}  Sat Aug 19 01:15:15 UTC 2023\n"
                "GCC version:  gcc version 11.4.0 (Ubuntu 11.4.0-1ubuntu1~22.04)\n")
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
    build = {"torch_build": torch.__version__, "torch_cuda": "13.0", "nvidia_driver": None}
    assert device.record(placement) == {"device": "Fake GPU 80GB", "precision": "fp16",
                                        "peak_gpu_memory_bytes": 123_456_789, "cuda_visible_devices": None,
                                        **build}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")   # what Ray or SLURM gave the run
    assert device.record(Placement("cpu", "cpu", "fp32")) == {"device": "cpu", "precision": "fp32",
                                                              "cuda_visible_devices": "3", **build}


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


@pytest.mark.parametrize("dev", ["cuda", "auto"])
def test_driver_too_old_for_the_cuda13_build_names_driver_needed_and_switch(machine, capsys, dev):
    """The planted fault: a SLURM GPU node whose r535 driver cannot run the index's CUDA 13.0 torch."""
    machine.warning, machine.driver, machine.slurm = DRIVER_TOO_OLD, "535.104.05", "1"
    machine.setup()
    with pytest.raises(DeviceError) as error:
        place(trainer(dev))
    line = str(error.value)
    assert "\n" not in line
    assert ("NVIDIA driver 535.104.05 is too old for this torch (CUDA 13.0 build needs driver >= 580); "
            "install the CUDA 12.8 build of the same torch: make install TORCH_CUDA=cu128 "
            "(needs driver >= 525.60.13)") in line
    # before that, the start-up line says which torch build met which driver
    assert f"torch {torch.__version__} (CUDA 13.0 build); NVIDIA driver 535.104.05" in capsys.readouterr().out


def test_driver_below_every_build_says_update_it(machine):
    machine.driver = "470.82.01"
    machine.setup()
    with pytest.raises(DeviceError, match=r"driver 470.82.01 is too old .* update the driver"):
        place(trainer("cuda"))


def test_a_new_enough_driver_is_logged_and_recorded(machine, capsys):
    machine.cuda, machine.driver = True, "580.65.06"
    machine.setup()
    placement = place(trainer())
    assert "NVIDIA driver 580.65.06" in capsys.readouterr().out
    assert device.record(placement)["nvidia_driver"] == "580.65.06"
    assert device.driver_too_old("12.8", "535.104.05") is None  # the TORCH_CUDA=cu128 build runs on r535
    assert device.driver_too_old("12.8", "520.61.05").endswith("(no torch build offered runs on it)")


def test_open_kernel_module_version_file_and_no_driver(tmp_path, monkeypatch):
    f = tmp_path / "version"
    f.write_text("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build  "
                 "(dvs-builder@U16-I3-B03-4-3)  Tue Jul 15 2025\n")
    assert device.driver_version(f) == "580.65.06"
    assert device.driver_too_old("13.0", "580.65.06") is None
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi either: None, not an error
    assert device.driver_version(tmp_path / "absent") is None


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
