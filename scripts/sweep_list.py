"""`make sweep-list NAME=x [ARGS=...]`: how many runs a sweep launches, how many distinct run directories
they are (sweeps share runs), and their overrides (expanded and composed by tasks.config.sweeps; nothing
trains).
NAME=paper or all: several sweeps, with the total over distinct runs."""
import argparse
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.config.sweeps import distinct_runs, expand, scoped, sweep_names  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="List the runs a sweep launches (nothing is trained).")
    ap.add_argument("name", help="sweep name (sweeps/<name>.yaml), 'paper' or 'all'")
    ap.add_argument("overrides", nargs="*", help="extra overrides, as on the run.py command line "
                                                 "(<sweep>:<override> for one sweep of several)")
    ap.add_argument("--count", action="store_true", help="print only the numbers of runs")
    args = ap.parse_intermixed_args(argv)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `make sweep-list | head` ends quietly
    try:
        names = sweep_names(args.name)
        found = distinct_runs(names, args.overrides)
        for name in names:
            mine = [sweeps for sweeps, _, _ in found["runs"].values() if name in sweeps]
            failed = found["failed"].get(name, [])
            line = f"sweep {name}: {found['listed'][name]} run(s), {len(mine) + len(failed)} distinct"
            if len(names) > 1:
                line += f" ({sum(1 for sweeps in mine if len(sweeps) > 1)} also in another sweep listed here)"
            if failed:
                line += f"; {len(failed)} do not compose, e.g. {' '.join(failed[0][0])}: {failed[0][1]}"
            print(line)
            if not args.count:
                for i, ov in enumerate(expand(name, scoped(name, args.overrides))):
                    print(f"  #{i}: {' '.join(ov)}")
        if len(names) > 1:
            listed, runs = sum(found["listed"].values()), found["runs"]
            shared = sum(len(sweeps) - 1 for sweeps, _, _ in runs.values())
            bad = sum(len(v) for v in found["failed"].values())
            tail = f"; {bad} do not compose" if bad else ""
            print(f"{args.name} ({len(names)} sweeps): {listed} listed runs, {len(runs) + bad} distinct "
                  f"({shared} listed by more than one sweep{tail})")
    except (FileNotFoundError, ValueError) as e:
        print(f"sweep-list: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
