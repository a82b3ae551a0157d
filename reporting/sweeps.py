"""Moved to tasks/sweeps.py (sweep launching sits next to the runner); this name stays importable
for code written before the move."""
from tasks.sweeps import CONF, ROOT, SWEEPS, available, compose_runs, expand, is_group, params_of

__all__ = ["CONF", "ROOT", "SWEEPS", "available", "compose_runs", "expand", "is_group", "params_of"]
