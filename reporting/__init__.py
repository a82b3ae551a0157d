"""Tables and figures of the paper from result.json files, and sweep expansion (no training here).

Importing this package is cheap (no torch, no Hydra run): `make tables` must stay fast on
thousands of runs.
"""
from .collect import Collection, Problem, load_runs
from .report import Report, make_tables

__all__ = ["Collection", "Problem", "Report", "load_runs", "make_tables"]
