"""``make preflight NAME=<sweep> GPU_MEM=<GiB> [GPU=<name>] [GPUS=<n>] [ARGS="<overrides>"]``.

Exit 0: every run can start and fits; 1: some run cannot start or does not fit (named, with its fix);
2: bad input (unknown sweep or GPU, a run that does not compose), one line.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from preflight import facts
from preflight.plan import Planner, RunCheck, Target


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="preflight", description=__doc__.split("\n")[0])
    p.add_argument("name", help="sweep name (sweeps/<name>.yaml)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides applied to every run")
    p.add_argument("--gpu-mem", type=float, required=True, help="GiB of GPU memory per run")
    p.add_argument("--gpu", default=None, help="GPU for peak throughput and precision (gpus.yaml)")
    p.add_argument("--gpus", type=int, default=None, help="GPUs running the sweep at once, one run each "
                   "(a Ray cluster, an 8-GPU server, a SLURM array): prints the wall time")
    return p.parse_intermixed_args(argv)


def check_sweep(name: str, overrides: list[str], target: Target, echo: Any = None) -> list[RunCheck]:
    """Every run of ``name`` (as ``make sweep-list`` enumerates and composes them), checked."""
    from tasks.sweeps import compose_runs

    planner = Planner(target)
    rows = []
    for run_overrides, spec in compose_runs(name, overrides):
        rows.append(planner.check(run_overrides, spec))
        if echo:
            echo(f"  checked {len(rows)}: {' '.join(run_overrides)} -> {rows[-1].status}")
    return rows


def failing(rows: list[RunCheck]) -> list[RunCheck]:
    return [r for r in rows if r.status != "ok" or r.fits is False]


def main(argv: list[str] | None = None) -> int:
    from preflight import report

    args = parse(sys.argv[1:] if argv is None else argv)
    gpu = args.gpu or facts.load("gpus")["default"]
    try:
        facts.gpu(gpu)
        if not args.gpu_mem > 0:
            raise ValueError(f"GPU_MEM={args.gpu_mem:g} must be > 0 (GiB)")
        if args.gpus is not None and args.gpus < 1:
            raise ValueError(f"GPUS={args.gpus} must be >= 1")
        target = Target(gpu, args.gpu_mem)
        rows = check_sweep(args.name, args.overrides, target)
    except (KeyError, ValueError, FileNotFoundError) as error:
        print(f"preflight: {str(error).strip(chr(34))}", file=sys.stderr)
        return 2
    print(report.table(rows, target))
    print(report.summary(args.name, rows, target))
    if args.gpus:
        print(report.wall_time(rows, args.gpus))
    bad = failing(rows)
    for r in bad:
        why = "; ".join(r.problems) or (f"needs {r.need_gib:.1f} GiB > {target.gpu_mem:g}: "
                                        + (f"fix {r.fix}" if r.fix else "no grad_accum fits"))
        print(f"{r.status if r.status != 'ok' else 'OVER'}: {' '.join(r.overrides)}: {why}", file=sys.stderr)
    return 1 if bad else 0
