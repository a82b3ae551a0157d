"""The repository explains itself: no tracked file points at a document or machine path outside it."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Built from parts so that this file does not match itself.
OUTSIDE = ("../" + "shared", "/" + "work/", "paper/" + "README.md")


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        pytest.skip("git is not available")
    if out.returncode:
        pytest.skip("not a git checkout")
    return [ROOT / line for line in out.stdout.splitlines() if not line.startswith(".ci/")]


def test_no_tracked_file_cites_a_path_outside_the_repository():
    offenders = []
    for path in tracked_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue  # binary files (figures) and files deleted in the work tree
        offenders += [f"{path.relative_to(ROOT)}: {word}" for word in OUTSIDE if word in text]
    assert not offenders, offenders
