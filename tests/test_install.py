"""`make install TORCH_CUDA=<build>`: the commands it would run (make -n), nothing installed."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from runs import ROOT

from tasks.training import device

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
# under `make test` a nested make prints "Entering directory" lines unless told not to
MAKE_N = ["make", "--no-print-directory", "-n"]


@pytest.mark.parametrize("build", sorted(device.TORCH_CUDA_BUILDS))
def test_torch_cuda_switch_installs_the_same_pins_from_the_per_cuda_index(build):
    out = subprocess.run([*MAKE_N, "torch-cuda", f"TORCH_CUDA={build}"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    pins = re.findall(r"^(torch(?:vision)?==\S+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert len(pins) == 2
    first, *rest = out.splitlines()
    # torch and torchvision only, from PyTorch's index for that CUDA, as <the requirements pin>+<build>
    assert first.split() == [".venv/bin/pip", "install", "-q", "--index-url",
                             f"https://download.pytorch.org/whl/{build}", *(f"{p}+{build}" for p in pins)]
    # then everything else, constrained to the build just installed
    assert ".venv/bin/pip install -q -r requirements.txt -c .venv/torch-constraints.txt" in rest


def test_default_install_is_the_package_index_build():
    out = subprocess.run([*MAKE_N, "-B", ".venv/.installed"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert ".venv/bin/pip install -q -r requirements.txt" in out and "--index-url" not in out


def test_package_version_is_capaboost_version():
    """One version number: setuptools reads the package's version from capaboost.__version__ (the one
    hashed into every run identity), as `pip install .` would."""
    from setuptools.config.pyprojecttoml import read_configuration

    import capaboost

    project = read_configuration(ROOT / "pyproject.toml", expand=True)["project"]
    assert project["version"] == capaboost.__version__ == "0.2.0"
