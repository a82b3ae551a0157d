"""Where a run trains and in which precision, decided once before anything is built or written.

``trainer.device``: ``cuda`` needs a GPU torch can use and stops otherwise; ``auto`` uses CUDA when torch
can, and CPU only when nothing in the environment says GPUs were meant to be there (a SLURM GPU
allocation, which the SLURM launchers ask for; ``CUDA_VISIBLE_DEVICES`` naming devices; ``/dev/nvidia0``),
so a job whose torch build the driver cannot run stops instead of spending its allocation on the CPU;
``cpu`` (or the older ``trainer.use_cpu=true``) always trains on CPU.

``trainer.precision=auto``: bf16 where the GPU has it natively (Ampere and newer), else fp16, as the
official runs did; fp32 on CPU. On CUDA, fp32 matmuls use TF32 (what fp32 layers left by autocast run in).
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.config import ConfigError

NVIDIA_DEVICE = Path("/dev/nvidia0")
NVIDIA_DRIVER = Path("/proc/driver/nvidia/version")
# Set by SLURM in a job that was given GPUs (--gpus, --gpus-per-node, --gres=gpu)
SLURM_GPU_VARS = ("SLURM_GPUS_ON_NODE", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS")


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


def cuda_status() -> tuple[bool, str]:
    """(torch can use CUDA, why not): torch's own warning when it gives one (e.g. a driver too old for
    the CUDA build), else the build and driver versions."""
    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    if available:
        return True, ""
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} is a CPU-only build"
    said = [str(w.message).strip().splitlines()[0] for w in caught if "CUDA" in str(w.message)]
    driver = (NVIDIA_DRIVER.read_text().splitlines()[0].strip() if NVIDIA_DRIVER.is_file()
              else "no NVIDIA driver loaded")
    return False, (said[0] if said else f"no usable GPU for torch {torch.__version__} (CUDA "
                                        f"{torch.version.cuda} build; {driver})")


def place(trainer: Mapping[str, Any]) -> Placement:
    """The device and precision for ``trainer`` (the config's trainer section); raises DeviceError."""
    import torch

    wanted = "cpu" if trainer.get("use_cpu") else trainer.get("device", "auto")
    precision = trainer["precision"]
    cuda = False
    if wanted != "cpu":
        cuda, why = cuda_status()
        expected = gpus_expected()
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
    ``CUDA_VISIBLE_DEVICES`` as the run saw it (what a launcher such as Ray or SLURM gave this run)."""
    out: dict[str, Any] = {"device": placement.name, "precision": placement.precision,
                           "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    if placement.device == "cuda":
        import torch

        out["peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated()
    return out
