"""``make demo``: AFINN data -> the demo sweep on Hydra's own launcher -> `make tables` (the table and
its paired-by-seed verdicts) -> synthetic capacity check. ``--tune`` runs the learning-rate sweep
instead and writes the choice.

The sweep is ``python run.py -m sweep=demo``, as for the paper sweeps, split by arm over ``--workers``
processes (two single-threaded runs use two cores better than one two-threaded run at these sizes;
demo/determinism.py pins one thread per run, so the split never changes a number). Finished runs are
skipped by the runner itself.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tasks.config import sweeps as project_sweeps  # the project's sweep expansion: the one import of it

from . import afinn, capacity, tune

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "results" / "demo"
ARM = "+sweep/demo_arm"
# Fast mode (tests, a first look): one seed, the small-r pair, one short epoch on a few words.
FAST = ["seed=42", "trainer.epochs=1", "data.train_limit=64", "data.eval_limit=32"]
FAST_ARMS = {"demo": [f"{ARM}=lora_r3,capaboost_r4_d2"]}  # other sweeps: all their arms
ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
       "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # unbuffered: the driver follows the logs


def log(msg: str) -> None:
    print(msg, flush=True)


def run_sweep(name: str, extra: list[str], out: Path, workers: int) -> int:
    """``run.py -m sweep=<name>`` with the arms split over ``workers`` processes; the number of failures.

    The arms: the sweep's ``+sweep/...`` key with the most values (demo: ``+sweep/demo_arm``)."""
    params = project_sweeps.params_of(name)
    key = max((k for k in params if k.startswith("+sweep/")), key=lambda k: len(params[k].split(",")))
    arms = next((o.split("=", 1)[1] for o in extra if o.startswith(f"{key}=")), params[key]).split(",")
    extra = [o for o in extra if not o.startswith(f"{key}=")]
    total = len(project_sweeps.expand(name, [f"{key}={','.join(arms)}", *extra]))
    (out / "logs").mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(min(workers, len(arms))):
        cmd = [sys.executable, "run.py", "-m", f"sweep={name}", f"{key}={','.join(arms[i::workers])}", *extra,
               f"hydra.sweep.dir={out / 'multirun' / name / str(i)}"]
        path = out / "logs" / f"{name}_{i}.log"
        with open(path, "w") as fh:
            procs.append((subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                                           env={**os.environ, **ENV}), path, cmd))
    log(f"sweep {name}: {total} runs, {len(procs)} process(es) of one thread; logs in {out / 'logs'}")
    seen: set[str] = set()  # each line names its run dir: printed once, whatever happens to the logs
    try:
        while True:
            running = any(p.poll() is None for p, _, _ in procs)
            for _, path, _ in procs:
                text = path.read_text(errors="replace") if path.is_file() else ""
                for line in text.splitlines():
                    if line.startswith(("done ", "already completed")) and line not in seen:
                        seen.add(line)
                        log(f"[{len(seen):>3}/{total}] {line}")
            if not running:
                break
            time.sleep(5)
    finally:  # Ctrl-C or kill: stop the sweep processes too (finished runs stay; a re-run resumes)
        for p, _, _ in procs:
            if p.poll() is None:
                p.terminate()
    failed = [(p, path, cmd) for p, path, cmd in procs if p.returncode]
    for p, path, cmd in failed:
        tail = path.read_text(errors="replace").splitlines()[-15:]
        log(f"\nFAILED (exit {p.returncode}): {' '.join(cmd[1:])}\n  log: {path}\n"
            + "\n".join("    " + ln for ln in tail))
    return len(failed)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fast", action="store_true", help="1 seed, 2 arms, a few steps (the test suite's demo)")
    ap.add_argument("--tune", action="store_true",
                    help="run sweeps/demo_tune.yaml and write each arm's chosen lr into sweeps/demo_arm/")
    ap.add_argument("--sweep", default=None, help="another demo sweep over the same data, e.g. "
                    "demo_official_vs_ours or demo_modern (its runs and tables go to <out>/<sweep>/)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output root (default results/demo)")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="sweep processes")
    ap.add_argument("--skip-capacity", action="store_true", help="leave out the synthetic capacity check")
    args = ap.parse_args(argv)
    if args.workers < 1:
        ap.error("--workers must be >= 1")
    if args.sweep and args.tune:
        ap.error("--sweep and --tune are two different sweeps: give one")
    t0, out = time.time(), args.out.resolve()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `kill`: stop the sweep processes too
    name = args.sweep or ("demo_tune" if args.tune else "demo")
    data_root = out  # one converted data set for every demo sweep
    if name != "demo" and not args.tune:  # another demo sweep: its own runs and tables, no capacity check
        out, args.skip_capacity = out / name, True
    runs = out / ("tune/runs" if args.tune else "runs")

    log("== AFINN-165 valence -> GLUE-format (STS-B schema) data")
    data = afinn.ensure(data_root / "data" / "afinn")
    for split, s in afinn.load_info(data.parent)["stats"].items():
        log(f"  {split:<10} {s['words']} words, label mean {s['label_mean']:.2f} std {s['label_std']:.2f}")

    log(f"== sweep {name}" + (" (fast)" if args.fast else ""))
    extra = [f"runs_root={runs}", f"data.path={data.parent}"] + (FAST + FAST_ARMS.get(name, []) if args.fast
                                                                 else [])
    failures = run_sweep(name, extra, out, args.workers)

    if args.tune:
        rc = tune.main([str(runs)] + ([] if args.fast else ["--write"]))
    else:
        log("== tables (reporting.make_tables, as `make tables RUNS=...`)")
        from reporting import make_tables

        report = make_tables([runs], out)
        log("\n".join(report.lines()))
        for path in report.tables:  # the table and its paired-by-seed verdicts
            if path.suffix == ".md":
                log(f"\n--- {path}\n{path.read_text(encoding='utf-8').strip()}")
        rc = 0
        if not args.skip_capacity and not args.sweep:  # the capacity check belongs to the main demo
            log("== synthetic capacity check (fit a random full-rank update; rank of dW vs d)")
            setup = capacity.Setup.tiny() if args.fast else capacity.Setup()
            md = capacity.to_markdown(capacity.run(setup, out))
            log(md[md.index("## Equal"):].strip() + f"\n  -> {out / 'capacity.md'}")
    minutes, seconds = divmod(time.time() - t0, 60)
    ok = not failures and not rc
    log(f"\ndemo {'ok' if ok else f'{failures} failed sweep process(es)'}: "
        f"total wall time {int(minutes)} min {seconds:.0f} s")
    return 0 if ok else 1
