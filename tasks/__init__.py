"""Experiment harness around the method (run.py -> tasks.runner -> a suite -> the stock HF Trainer).

Sub-packages, lower ones never importing higher ones: ``facts`` (what each task suite is), ``config``
(what a run is), ``data`` (every source, checked), ``training`` (one run's pieces), ``suites`` (a
suite's data -> Job and metrics), ``cluster`` (locks, checkpoints, signals, DDP, Ray). Light to
import: heavy libraries load inside the modules that need them.
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository: run.py, conf/, sweeps/, results/
CONF = ROOT / "conf"  # Hydra's config folder
