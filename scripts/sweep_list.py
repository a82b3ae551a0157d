"""`make sweep-list NAME=x`: how many runs a sweep launches and their overrides (expanded by tasks.sweeps)."""
import argparse
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.sweeps import available, expand  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="List the runs a sweep launches (nothing is trained).")
    ap.add_argument("name", help="sweep name (sweeps/<name>.yaml) or 'all'")
    ap.add_argument("overrides", nargs="*", help="extra overrides, as on the run.py command line")
    ap.add_argument("--count", action="store_true", help="print only the number of runs")
    args = ap.parse_args(argv)
    names = available() if args.name == "all" else [args.name]
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `make sweep-list | head` ends quietly
    try:
        for name in names:
            runs = expand(name, args.overrides)
            print(f"sweep {name}: {len(runs)} run(s)")
            if not args.count:
                for i, ov in enumerate(runs):
                    print(f"  #{i}: {' '.join(ov)}")
    except (FileNotFoundError, ValueError) as e:
        print(f"sweep-list: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
