"""Where a run trains and in which precision, decided once before anything is built or written.

``trainer.device``: ``cuda`` needs a GPU torch can use and stops otherwise; ``auto`` uses CUDA when torch
can, and CPU only when nothing in the environment says GPUs were meant to be there (a SLURM GPU
allocation, which the SLURM launchers ask for; ``CUDA_VISIBLE_DEVICES`` naming devices; ``/dev/nvidia0``),
so a job whose torch build the driver cannot run stops instead of spending its allocation on the CPU;
``cpu`` (or the older ``trainer.use_cpu=true``) always trains on CPU.

``trainer.precision=auto``: bf16 where the GPU has it natively (Ampere and newer), else fp16, as the
official runs did; fp32 on CPU. On CUDA, fp32 matmuls use TF32 (what fp32 layers left by autocast run in).

The driver: a torch wheel runs on any NVIDIA driver at or above the minimum of its CUDA major version
(NVIDIA's minor-version compatibility, ``DRIVER_MINIMUM``). The package index's torch is a CUDA 13 build;
on an older driver the runner says so in one line, naming the driver found, the one needed and the
install switch that gets the CUDA 12 build of the same torch (``make install TORCH_CUDA=cu128``).
"""
from __future__ import annotations

import os
import re
import subprocess
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.config.runspec import ConfigError

NVIDIA_DEVICE = Path("/dev/nvidia0")
NVIDIA_DRIVER = Path("/proc/driver/nvidia/version")
# Set by SLURM in a job that was given GPUs (--gpus, --gpus-per-node, --gres=gpu)
SLURM_GPU_VARS = ("SLURM_GPUS_ON_NODE", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS")
# Minimum Linux NVIDIA driver for a CUDA major version: NVIDIA's CUDA compatibility guide, table "CUDA
# Toolkit and Minimum Required Driver Version for CUDA Minor Version Compatibility" (13.x: >= 580;
# 12.x: >= 525.60.13). Torch wheels rely on it: a cu126 or cu128 wheel runs on a 535 or 550 driver.
DRIVER_MINIMUM = {"13": "580", "12": "525.60.13"}
# `make install TORCH_CUDA=<build>`: the same torch/torchvision from PyTorch's per-CUDA wheel index.
# The default install (no TORCH_CUDA) is the package index's build, CUDA 13.0.
TORCH_CUDA_BUILDS = {"cu128": "12.8", "cu126": "12.6"}


class DeviceError(ConfigError):
    """The config asks for a device or precision this machine cannot give; one line, exit 2."""


@dataclass(frozen=True)
class Placement:
    device: str       # "cuda" | "cpu": what the Trainer uses
    name: str         # the GPU's name, or "cpu": what result.json records
    precision: str    # "fp32" | "fp16" | "bf16": the precision actually used


def gpus_expected(environ: Mapping[str, str] | None = None, device_file: Path | None = None) -> str | None:
    """What says this process was given GPUs (None: nothing does): a SLURM GPU allocation (what the
    SLURM launchers ask for), ``CUDA_VISIBLE_DEVICES`` naming devices, or an NVIDIA device file. An
    explicit empty or -1 ``CUDA_VISIBLE_DEVICES`` hides GPUs on purpose: the device file is then not asked."""
    environ = os.environ if environ is None else environ
    device_file = device_file or NVIDIA_DEVICE
    slurm = [f"{k}={environ[k]}" for k in SLURM_GPU_VARS if environ.get(k, "").strip() not in ("", "0")]
    if slurm:
        return f"SLURM allocated GPUs ({slurm[0]})"
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        shown = visible.strip()
        hidden = not shown or shown.startswith(("-1", "NoDevFiles"))
        return None if hidden else f"CUDA_VISIBLE_DEVICES={shown}"
    return f"{device_file} exists" if device_file.exists() else None


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


def driver_version(version_file: Path | None = None) -> str | None:
    """The loaded NVIDIA kernel driver's version (e.g. "535.104.05"), or None where there is none: read
    from ``/proc/driver/nvidia/version``, else asked of ``nvidia-smi``; never raises."""
    version_file = version_file or NVIDIA_DRIVER
    try:
        found = re.search(r"Kernel Module.*?\s(\d+\.\d+(?:\.\d+)?)\s", version_file.read_text())
        if found:
            return found.group(1)
    except OSError:
        pass
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = out.stdout.strip().splitlines()[:1] if out.returncode == 0 else []
    return first[0].strip() if first and re.fullmatch(r"\d+\.\d+(\.\d+)?", first[0].strip()) else None


def torch_build() -> str:
    """One line for the log: torch's version, the CUDA it was built for, and the driver found."""
    import torch

    cuda = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
    return f"torch {torch.__version__} ({cuda}); NVIDIA driver {driver_version() or 'not found'}"


def driver_too_old(cuda: str | None, driver: str | None) -> str | None:
    """None, or one line: the driver found is below what torch's CUDA build needs, and the fix."""
    needed = DRIVER_MINIMUM.get((cuda or "").split(".")[0])
    if not cuda or not driver or not needed or _version(driver) >= _version(needed):
        return None
    line = f"NVIDIA driver {driver} is too old for this torch (CUDA {cuda} build needs driver >= {needed}); "
    usable = [(build, v) for build, v in TORCH_CUDA_BUILDS.items()
              if _version(driver) >= _version(DRIVER_MINIMUM[v.split(".")[0]]) and v != cuda]
    if not usable:
        return line + "update the driver (no torch build offered runs on it)"
    build, v = usable[0]
    return (line + f"install the CUDA {v} build of the same torch: make install TORCH_CUDA={build} "
            f"(needs driver >= {DRIVER_MINIMUM[v.split('.')[0]]})")


def cuda_status() -> tuple[bool, str]:
    """(torch can use CUDA, why not): a driver too old for torch's CUDA build (found, needed, the fix),
    else torch's own warning when it gives one, else the build and driver versions."""
    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    if available:
        return True, ""
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} is a CPU-only build"
    driver = driver_version()
    too_old = driver_too_old(torch.version.cuda, driver)
    if too_old:
        return False, too_old
    said = [str(w.message).strip().splitlines()[0] for w in caught if "CUDA" in str(w.message)]
    return False, (said[0] if said else f"no usable GPU for torch {torch.__version__} (CUDA "
                                        f"{torch.version.cuda} build; "
                                        f"{f'driver {driver}' if driver else 'no NVIDIA driver loaded'})")


def place(trainer: Mapping[str, Any]) -> Placement:
    """The device and precision for ``trainer`` (the config's trainer section); raises DeviceError."""
    import torch

    wanted = "cpu" if trainer.get("use_cpu") else trainer.get("device", "auto")
    precision = trainer["precision"]
    cuda = False
    if wanted != "cpu":
        cuda, why = cuda_status()
        expected = gpus_expected()
        if cuda or expected:  # a GPU node: say which build meets which driver before anything else
            print(torch_build(), flush=True)
        if not cuda and wanted == "cuda":
            raise DeviceError(f"trainer.device=cuda but torch cannot use CUDA: {why}")
        if not cuda and expected:
            raise DeviceError(f"trainer.device=auto: {expected} but torch cannot use CUDA: {why} "
                              f"(trainer.device=cpu trains on CPU anyway)")
    if not cuda:
        if precision == "fp16":
            raise DeviceError("trainer.precision=fp16 needs CUDA; this run trains on cpu "
                              "(use auto, fp32 or bf16)")
        return Placement("cpu", "cpu", "fp32" if precision == "auto" else precision)
    name = torch.cuda.get_device_name()
    bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    if precision == "bf16" and not bf16:
        raise DeviceError(f"trainer.precision=bf16 but {name} has no native bf16 (use auto or fp16)")
    torch.set_float32_matmul_precision("high")  # TF32 matmuls
    torch.backends.cudnn.allow_tf32 = True
    torch.cuda.reset_peak_memory_stats()
    return Placement("cuda", name, ("bf16" if bf16 else "fp16") if precision == "auto" else precision)


def record(placement: Placement) -> dict[str, Any]:
    """result.json's device fields: the GPU's name (or "cpu"), the precision used, peak GPU memory, and
    ``CUDA_VISIBLE_DEVICES`` as the run saw it (what a launcher such as Ray or SLURM gave this run), and
    the torch build and NVIDIA driver it ran with (None where there is no driver)."""
    import torch

    out: dict[str, Any] = {"device": placement.name, "precision": placement.precision,
                           "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                           "torch_build": torch.__version__, "torch_cuda": torch.version.cuda,
                           "nvidia_driver": driver_version()}
    if placement.device == "cuda":
        out["peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated()
    return out
