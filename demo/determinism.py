"""Same machine, same command, same numbers: the demo sweeps switch this Hydra callback on.

CPU results depend on the number of threads (the split of every reduction) and, for a few ops, on
nondeterministic kernels; pinning both before each run makes a re-run reproduce every digit. One
thread per run: the demo launches one sweep process per core instead (tiny matrices gain little
from a second thread).
"""
from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback


class Deterministic(Callback):
    def __init__(self, threads: int = 1) -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.threads = threads

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        import torch

        torch.set_num_threads(self.threads)
        torch.use_deterministic_algorithms(True)
        print(f"pinned: {self.threads} thread(s), deterministic algorithms", flush=True)
