"""Data-parallel runs on stock engines: one DDP group per run, launched by torchrun or by SLURM.

torchrun exports the torch.distributed variables itself. A SLURM job started by
hydra-submitit-launcher (or its local executor) only has submitit's ``JobEnvironment``: each
of its N*M tasks maps that to RANK/LOCAL_RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT here,
before the HF Trainer (accelerate) reads them. Everything that maps an environment is a pure
function, so it is tested without SLURM.

CapaBoost needs two things DDP does not check: identical masks on every rank (they are
buffers rebuilt from the mask seed, and ``check_masks`` compares their digest), and no
buffer broadcasting (see ``trainer_overrides``).
"""
from __future__ import annotations

import atexit
import hashlib
import os
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

TORCH_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
PORT_RANGE = (20000, 60000)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in its data-parallel group (world_size 1: a plain run)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    launcher: str = "none"  # "none" | "torchrun" (or any launcher that set the env) | "submitit"

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only this process writes result.json, checkpoints and W&B."""
        return self.rank == 0


def master_port(job_id: str, low: int = PORT_RANGE[0], high: int = PORT_RANGE[1]) -> int:
    """A port every task of one job agrees on without talking; different jobs (array tasks
    that may share a node) get different ports unless their hashes collide (1 in high-low)."""
    digest = hashlib.sha256(str(job_id).encode()).digest()
    return low + int.from_bytes(digest[:8], "little") % (high - low)


def torch_env(job_id: str, global_rank: int, local_rank: int, num_tasks: int, num_nodes: int,
              hostnames: Sequence[str]) -> dict[str, str]:
    """The torch.distributed ``env://`` variables of one task of a multi-task job.

    Rank 0 runs on the first node of the job's node list (SLURM's default block
    distribution), so that node is the rendezvous; a one-node job uses the loopback.
    """
    for name, value, low in [("num_tasks", num_tasks, 1), ("num_nodes", num_nodes, 1),
                             ("global_rank", global_rank, 0), ("local_rank", local_rank, 0)]:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if num_tasks % num_nodes:
        raise ValueError(f"{num_tasks} tasks do not split evenly over {num_nodes} nodes: "
                         f"set tasks_per_node (one task per GPU) instead of a total task count")
    per_node = num_tasks // num_nodes
    if global_rank >= num_tasks or local_rank >= per_node:
        raise ValueError(f"rank {global_rank} (local {local_rank}) out of range for {num_tasks} tasks "
                         f"on {num_nodes} nodes")
    if num_nodes > 1 and not hostnames:
        raise ValueError(f"a {num_nodes}-node job needs its node list to find rank 0's host")
    return {"RANK": str(global_rank), "LOCAL_RANK": str(local_rank), "WORLD_SIZE": str(num_tasks),
            "LOCAL_WORLD_SIZE": str(per_node),
            "MASTER_ADDR": "127.0.0.1" if num_nodes == 1 else str(hostnames[0]),
            "MASTER_PORT": str(master_port(job_id))}


def submitit_env(job_env: Any) -> dict[str, str]:
    """``torch_env`` of a ``submitit.JobEnvironment`` (or anything with its attributes)."""
    return torch_env(str(job_env.job_id), int(job_env.global_rank), int(job_env.local_rank),
                     int(job_env.num_tasks), int(job_env.num_nodes), list(job_env.hostnames))


def read(environ: Mapping[str, str]) -> DistInfo:
    """The DistInfo an environment describes (torchrun's variables, or none: a plain run)."""
    if "WORLD_SIZE" not in environ:
        return DistInfo()
    try:
        world, rank = int(environ["WORLD_SIZE"]), int(environ.get("RANK", "0"))
        local = int(environ.get("LOCAL_RANK", str(rank)))
    except ValueError as err:
        raise ValueError(f"bad torch.distributed variables {_shown(environ)}: {err}") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(f"inconsistent torch.distributed variables {_shown(environ)}")
    if world > 1 and ("MASTER_ADDR" not in environ or "MASTER_PORT" not in environ):
        raise ValueError(f"WORLD_SIZE={world} needs MASTER_ADDR and MASTER_PORT; got {_shown(environ)}")
    return DistInfo(rank, local, world, "torchrun" if world > 1 else "none")


def export(environ: MutableMapping[str, str] | None = None, job_env: Any = None) -> DistInfo:
    """Make this process's torch.distributed variables visible in ``environ``, and describe them.

    Variables already set (torchrun, or a user's own launcher) win. Otherwise, inside a
    submitit job with several tasks, they come from its ``JobEnvironment``.
    """
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" in environ:
        return read(environ)
    if job_env is None and environ.get("SUBMITIT_EXECUTOR"):
        import submitit

        job_env = submitit.JobEnvironment()
    if job_env is None or int(job_env.num_tasks) <= 1:
        return DistInfo()
    environ.update(submitit_env(job_env))
    info = read(environ)
    return DistInfo(info.rank, info.local_rank, info.world_size, "submitit")


def setup(timeout_s: int = 1800, cuda: bool | None = None) -> DistInfo:
    """Call once per process, before the model and the Trainer: exports the variables and, in a
    group of several, joins it (NCCL on GPUs, gloo on CPUs); accelerate then reuses this group.

    ``cuda``: where the run trains (tasks.training.device's placement); ``trainer.device=cpu`` on a GPU node
    must form a gloo group of CPU processes, not an NCCL one. None: wherever CUDA is usable.
    """
    info = export()
    if not info.distributed:
        return info
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available() if cuda is None else cuda
    os.environ.update(cpu_env(info, cuda))
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(info.local_rank % torch.cuda.device_count())
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout_s))
        atexit.register(_destroy)
    return info


def cpu_env(info: DistInfo, cuda: bool) -> dict[str, str]:
    """A group of CPU processes must say so (``accelerate launch --cpu`` sets the same variable):
    without it accelerate ignores the group on a machine without CUDA, and each rank trains
    alone on the whole data while believing the run is distributed."""
    return {"ACCELERATE_USE_CPU": "true"} if info.distributed and not cuda else {}


def barrier(info: DistInfo) -> None:
    """Wait for every rank (e.g. until rank 0 has cleared a run directory the others will read)."""
    if info.distributed:
        import torch.distributed as dist

        dist.barrier()


def teardown(info: DistInfo | None = None) -> None:
    """End of one run: every rank waits for the others (rank 0 has just written result.json).

    The group itself stays: the next run of a multirun in this process (``torchrun run.py -m``)
    reuses it. Destroying and re-creating it hung that second job (measured: one rank inside
    init_process_group, the other already past it). It is destroyed when the interpreter exits.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and (info is None or info.distributed):
        dist.barrier()


def _destroy() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def trainer_overrides(info: DistInfo) -> dict[str, Any]:
    """TrainingArguments for a DDP run of a CapaBoost model.

    ddp_find_unused_parameters=False: every trainable tensor (shared PEFT weights, head)
    gets a gradient each step, so DDP need not walk the graph; if one ever did not, DDP
    stops with an error instead of silently skipping it (the Trainer's default is True).
    ddp_broadcast_buffers=False: the masks are buffers; broadcasting would copy rank 0's
    over the others at wrap time and before every forward, costing a collective and hiding
    a mismatch that ``check_masks`` must see. No other buffer here carries state (no BatchNorm).
    """
    if not info.distributed:
        return {}
    return {"ddp_find_unused_parameters": False, "ddp_broadcast_buffers": False}


def per_device_batch(global_batch: int, world_size: int, grad_accum: int = 1) -> int:
    """The paper's batch size is the global one: split it over ranks and accumulation steps
    (the learning rate then needs no rescaling); refuse what does not divide."""
    share = world_size * grad_accum
    if global_batch < 1 or global_batch % share:
        raise ValueError(f"batch size {global_batch} does not split over world_size={world_size} x "
                         f"grad_accum={grad_accum}; pick a global batch divisible by {share}")
    return global_batch // share


def check_same(what: str, value: str, info: DistInfo) -> None:
    """All-gather ``value`` and fail on every rank, naming the ranks, if they disagree."""
    if not info.distributed:
        return
    import torch.distributed as dist

    values: list[str | None] = [None] * info.world_size
    dist.all_gather_object(values, value)
    if len(set(values)) > 1:
        groups: dict[str, list[int]] = {}
        for rank, v in enumerate(values):
            groups.setdefault(str(v), []).append(rank)
        detail = "; ".join(f"ranks {ranks}: {v[:16]}" for v, ranks in groups.items())
        raise RuntimeError(f"{what} differs across the {info.world_size} DDP ranks ({detail})")


def check_masks(model: Any, info: DistInfo) -> str:
    """Every rank must hold the same CapaBoost masks; returns the (agreed) mask digest."""
    from capaboost import mask_digest

    digest = mask_digest(model)
    check_same("CapaBoost mask digest (mask seed, d, density, mask kind and targets must match on "
               "every rank)", digest, info)
    return digest


def _shown(environ: Mapping[str, str]) -> dict[str, str]:
    return {k: environ[k] for k in TORCH_VARS if k in environ}
