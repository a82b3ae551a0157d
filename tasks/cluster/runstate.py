"""Where each run of a sweep stands, read from its run directory alone (no torch, no scheduler):

- ``done``: a readable result.json (``note`` when this sweep's name is not in its ``sweeps`` yet);
- ``running``: a run lock whose holder is alive (same host and pid namespace: its pid; else a
  heartbeat younger than ``tasks.cluster.runlock.STALE_AFTER_S``);
- ``dead``: no live holder, but a run that started (status.json ``running`` or ``preempted``, a stale
  lock, checkpoints): killed (SIGKILL, out of memory, a lost node) or preempted and not requeued;
- ``failed``: status.json ``failed``, with its one-line reason (or a torn result.json);
- ``missing``: no trace (never launched, or stopped before its run directory: a config error).

``relaunch`` gives the one ``run.py -m`` command over the smallest product of the sweep's own values
that covers every run to relaunch (done runs it also covers are no-ops).
"""
from __future__ import annotations

import json
import shlex
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks import result as schema
from tasks.cluster import finished, runlock

STATES = ("done", "running", "dead", "failed", "missing")
RELAUNCH = ("dead", "failed", "missing")


@dataclass
class RunState:
    overrides: list[str]
    run_dir: str
    state: str
    detail: str = ""
    note: str = ""    # done runs: this sweep's name is missing from result.json (a relaunch adds it)

    @property
    def relaunch(self) -> bool:
        return self.state in RELAUNCH or bool(self.note)


def _status(run_dir: Path) -> dict[str, Any]:
    try:
        status = json.loads((run_dir / schema.STATUS).read_text())
    except (OSError, ValueError):
        return {}
    return status if isinstance(status, dict) else {}


def state_of(run_dir: Path, sweep: str | None = None, stale_after_s: float = runlock.STALE_AFTER_S
             ) -> tuple[str, str, str]:
    """(state, one-line detail, note) of one run directory."""
    try:
        result = finished.load(run_dir / schema.RESULT)
    except finished.Torn as torn:
        return "failed", f"result.json is torn ({torn}): a relaunch sets it aside and resumes", ""
    if result is not None:
        names = result.get("sweeps") or []
        pending = (run_dir / schema.PENDING / sweep).exists() if sweep else False
        by = ", ".join(names) or "a single run"
        note = "" if not sweep or sweep in names or pending else \
            f"finished by {by}; not yet in {sweep}'s tables (a relaunch adds it)"
        return "done", "", note
    status = _status(run_dir)
    step = f", last checkpoint at step {status['step']}" if status.get("step") else ""
    lock = runlock.read(run_dir / runlock.LOCK)
    if lock is not None:
        holder, age = lock
        why = runlock.stale(holder, age, stale_after_s)
        if why is None:
            return "running", f"{runlock.describe(holder, age)}{step}", ""
        return "dead", f"its lock is stale: {why}{step}", ""
    kind = status.get("status")
    if kind == "failed":
        return "failed", str(status.get("error") or "failed (no reason recorded)"), ""
    if kind == "preempted":
        return "dead", (f"preempted by {status.get('signal', '?')}{step}, not running now (a requeued job "
                        "that waits in the queue resumes it; otherwise relaunch)"), ""
    if kind in ("running", "completed"):
        where = f"host {status.get('host', '?')}, pid {status.get('pid', '?')}"
        return "dead", (f"status.json says {kind} ({where}, updated {status.get('updated', '?')}) but no "
                        f"process holds the run: killed{step}"), ""
    if (run_dir / schema.CHECKPOINTS).is_dir():
        return "dead", "checkpoints but no status.json", ""
    return "missing", "", ""


def survey(runs: list[tuple[list[str], str]], sweep: str | None = None) -> list[RunState]:
    """[(overrides, run_dir)] -> their states, in sweep order (a run directory shared by two entries of
    one sweep is listed under each)."""
    return [RunState(ov, d, *state_of(Path(d), sweep)) for ov, d in runs]


def counts(states: list[RunState]) -> Counter:
    return Counter(s.state for s in states)


def relaunch(name: str, args: list[str], states: list[RunState]) -> tuple[str, int] | None:
    """The ``run.py -m`` command relaunching every run to relaunch, and how many runs it launches."""
    todo = [s for s in states if s.relaunch]
    if not todo:
        return None
    given = {a.partition("=")[0] for a in args}

    def values(among: list[RunState]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for s in among:
            for override in s.overrides:
                key, _, value = override.partition("=")
                if key != "sweep" and value not in out.setdefault(key, []):
                    out[key].append(value)
        return out

    keys, every = values(todo), values(states)
    passed = [a for a in args if a.partition("=")[0] not in every]   # launcher settings and the like
    # a key of the grid: restricted where fewer values need it; given on the command line: always said
    picked = [f"{k}={','.join(v)}" for k, v in keys.items() if k in given or set(v) != set(every[k])]
    covered = sum(all(o.partition("=")[2] in keys.get(o.partition("=")[0], [o.partition("=")[2]])
                      for o in s.overrides) for s in states)
    command = ["python", "run.py", "-m", f"sweep={name}", *passed, *picked]
    return " ".join(shlex.quote(c) for c in command), covered
