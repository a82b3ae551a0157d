"""Command lines behind `make tables` and `make sweep-list` (scripts/ only call these)."""
from __future__ import annotations

import argparse
import signal
import sys

from .paper import PAPER_DIR


def tables_main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Paper tables and figures from result.json files.")
    ap.add_argument("--runs", action="append", required=True,
                    help="directory searched recursively for result.json (repeatable)")
    ap.add_argument("--out", default="results",
                    help="writes <out>/tables/ and <out>/figures/ (default results)")
    ap.add_argument("--paper", default=str(PAPER_DIR), help="directory of published-number CSVs")
    ap.add_argument("--no-figures", action="store_true", help="tables only (skips matplotlib)")
    args = ap.parse_args(argv)
    from .report import make_tables

    try:
        report = make_tables(args.runs, args.out, args.paper, figures=not args.no_figures)
    except (FileNotFoundError, ValueError) as e:
        print(f"make tables: {e}", file=sys.stderr)
        return 2
    print("\n".join(report.lines()))
    return 0


def sweep_list_main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="List the runs a sweep launches (nothing is trained).")
    ap.add_argument("name", help="sweep name (sweeps/<name>.yaml) or 'all'")
    ap.add_argument("overrides", nargs="*", help="extra overrides, as on the run.py command line")
    ap.add_argument("--count", action="store_true", help="print only the number of runs")
    args = ap.parse_args(argv)
    from .sweeps import available, expand

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
