"""Tables and figures of the paper from result.json files (no training here).

Importing this package is cheap (no torch, no Hydra run): `make tables` must stay fast on
thousands of runs. Entry point: scripts/make_tables.py (`make tables`).
"""
from .build import make_tables
from .collect import Collection, Problem, load_runs
from .report import Report

__all__ = ["Collection", "Problem", "Report", "load_runs", "make_tables"]
