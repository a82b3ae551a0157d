"""`make status NAME=<sweep> [RUNS=dir] [ARGS="..."]`: where every run of a sweep stands (done / running /
dead / failed / missing, read from the run directories: tasks.cluster.runstate), with counts, and the one
command that relaunches only the runs that need it. Nothing is trained; no GPU, no scheduler needed."""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.cluster import runstate  # noqa: E402
from tasks.config.sweeps import compose_runs  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Where every run of a sweep stands (nothing is trained).")
    ap.add_argument("name", help="sweep name (sweeps/<name>.yaml)")
    ap.add_argument("overrides", nargs="*", help="extra overrides, as given to run.py -m sweep=<name>")
    ap.add_argument("--runs", help="runs_root the sweep wrote to (default: the config's)")
    ap.add_argument("--all", action="store_true", help="list done runs too")
    args = ap.parse_intermixed_args(argv)
    extra = ([f"runs_root={args.runs}"] if args.runs else []) + args.overrides
    try:
        runs = compose_runs(args.name, extra)
    except (FileNotFoundError, ValueError) as error:
        print(f"status: {error}", file=sys.stderr)
        return 2
    given = {o.partition("=")[0] for o in extra if "," not in o}  # one value for all: not repeated per run
    states = runstate.survey([(ov, spec.run_dir) for ov, spec in runs], sweep=args.name)
    n = runstate.counts(states)
    root = runs[0][1].config["runs_root"] if runs else "?"
    print(f"sweep {args.name}: {len(states)} run(s) under {root}")
    print("  " + " · ".join(f"{state} {n[state]}" for state in runstate.STATES))
    for s in states:
        if s.state != "done" or s.note or args.all:
            reason = s.detail or s.note
            shown = [o for o in s.overrides if o.partition("=")[0] not in {*given, "sweep"}]
            print(f"{s.state:8} {' '.join(shown)}")
            print(f"         {s.run_dir}" + (f"\n         {reason}" if reason else ""))
    found = runstate.relaunch(args.name, extra, states)
    if found is None:
        print("nothing to relaunch" + (" (runs still running)" if n["running"] else ""))
        return 0
    command, launched = found
    todo = sum(s.relaunch for s in states)
    print(f"relaunch the {todo} run(s) that are missing, dead or failed (or miss this sweep's name); "
          f"this launches {launched}, and the {launched - todo} others among them are finished or running "
          "(no-ops):")
    print(f"  {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
