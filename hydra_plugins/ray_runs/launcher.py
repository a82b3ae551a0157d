"""The Hydra launcher plugin behind ``hydra/launcher=ray`` (conf/hydra/launcher/ray.yaml).

Hydra imports every module under hydra_plugins at each start, outside ``sys.modules``; this one stays
small and imports Ray and the driver (tasks/cluster/ray_launch.py) only when a sweep is launched.
"""
from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


class RayRunsLauncher(Launcher):
    def __init__(self, **params: Any) -> None:
        self.params = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                       for k, v in params.items()}
        self.config = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from tasks.cluster.ray_launch import Driver

        return Driver(**self.params).launch(job_overrides, initial_job_idx)
