"""The preflight as a Hydra callback: a SLURM sweep is checked before a single job is submitted.

Configured in conf/config.yaml (``hydra.callbacks.preflight``); it acts only when the launcher is
SLURM (local sweeps cost nothing to retry). ``hydra.callbacks.preflight.skip=true`` submits unchecked;
``...gpu=<name>`` / ``...gpu_mem=<GiB>`` say which card the partition has (default: gpus.yaml's
default GPU and its memory).
"""
from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from preflight import facts


class PreflightFailed(SystemExit):
    """Some run of the sweep cannot start or does not fit: nothing is submitted.

    A SystemExit (message to stderr, exit status 1) because Hydra turns a callback's Exception into a
    warning and launches anyway.
    """


class Preflight(Callback):
    def __init__(self, skip: bool = False, gpu: str | None = None, gpu_mem: float | None = None) -> None:
        self.skip, self.gpu, self.gpu_mem = skip, gpu, gpu_mem

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if "Slurm" not in str(config.hydra.launcher.get("_target_", "")):
            return
        if self.skip:
            print("preflight: skipped (hydra.callbacks.preflight.skip=true)")
            return
        overrides = list(config.hydra.overrides.task)
        names = [o.split("=", 1)[1] for o in overrides if o.startswith("sweep=")]
        if not names:
            print("preflight: no sweep=<name> on the command line; nothing to check")
            return
        from preflight import cli  # torch and the model code: only when a SLURM sweep is checked
        from preflight.plan import Target

        gpu = self.gpu or facts.load("gpus")["default"]
        target = Target(gpu, float(self.gpu_mem or facts.gpu(gpu)["memory_gib"]))
        extra = [o for o in overrides if not o.startswith("sweep=")]
        try:
            rows = _outside_running_hydra(cli.check_sweep, names[0], extra, target)
        except Exception as error:  # noqa: BLE001 -- fail closed: an unchecked sweep is not submitted
            raise PreflightFailed(f"preflight could not check sweep {names[0]}: {type(error).__name__}: "
                                  f"{error}; submit unchecked with hydra.callbacks.preflight.skip=true"
                                  ) from error
        bad = cli.failing(rows)
        if bad:
            first = bad[0]
            why = "; ".join(first.problems) or f"needs {first.need_gib:.1f} GiB, fix {first.fix or 'none'}"
            raise PreflightFailed(
                f"preflight: {len(bad)} of {len(rows)} runs of sweep {names[0]} cannot start or do not fit "
                f"{target.gpu_mem:g} GiB ({target.gpu}), e.g. {' '.join(first.overrides)}: {why}. "
                f"Details: make preflight NAME={names[0]} GPU_MEM={target.gpu_mem:g}; "
                f"submit anyway with hydra.callbacks.preflight.skip=true")
        print(f"preflight: {len(rows)} runs of sweep {names[0]} can start and fit {target.gpu_mem:g} GiB")


def _outside_running_hydra(fn: Any, *args: Any) -> Any:
    """Run ``fn`` (which composes configs with Hydra's compose API) inside a running Hydra app: the
    compose API refuses an initialised GlobalHydra, so it is cleared for the call and the running app's
    Hydra put back after (GlobalHydra's public clear / initialize)."""
    from hydra.core.global_hydra import GlobalHydra

    running = GlobalHydra.instance().hydra
    GlobalHydra.instance().clear()
    try:
        return fn(*args)
    finally:
        GlobalHydra.instance().clear()
        if running is not None:
            GlobalHydra.instance().initialize(running)
