"""make gpu-check: where there is no CUDA it says so in one line (exit 2); on CPU at toy sizes the same
code runs end to end, so the script is known to work before a GPU is lent."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from runs import ROOT


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where torch has no CUDA")
def test_no_cuda_is_one_line_and_exit_2():
    proc = subprocess.run([sys.executable, "scripts/gpu_check.py"], cwd=ROOT, capture_output=True, text=True)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(lines) == 1 and lines[0].startswith("gpu-check: no CUDA device torch can use here: ")


@pytest.mark.slow
def test_cpu_smoke_runs_every_check():
    proc = subprocess.run([sys.executable, "scripts/gpu_check.py", "--cpu-smoke"], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("check"))
    checks = [line.split("  ")[0] for line in lines[head + 1:]]
    assert checks == ["memory roberta-base capaboost_lora (batch 2 x 16)",
                      "memory deberta-v3-base capaboost_lora (batch 2 x 16)",
                      "step CapaBoost-LoRA d=2 / PEFT LoRA r=8", "step PEFT LoRA r=16 / r=8",
                      "step CapaBoost-LoRA d=2 / PEFT LoRA r=16", "inference merged d=2 / base model",
                      "1-process gloo group: all-reduce, gather", "mask digest cpu vs cpu"]
    assert "FAIL" not in proc.stdout
