"""`make tables`: paper tables and figures from result.json files (the work is reporting.make_tables)."""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reporting import make_tables  # noqa: E402
from reporting.paper import PAPER_DIR  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Paper tables and figures from result.json files.")
    ap.add_argument("--runs", action="append", required=True,
                    help="directory searched recursively for result.json (repeatable)")
    ap.add_argument("--out", default="results",
                    help="writes <out>/tables/ and <out>/figures/ (default results)")
    ap.add_argument("--paper", default=str(PAPER_DIR), help="directory of published-number CSVs")
    ap.add_argument("--no-figures", action="store_true", help="tables only (skips matplotlib)")
    ap.add_argument("--peft-results", action="append", default=[],
                    help="directory of PEFT-format result files (huggingface/peft method_comparison/"
                         "MetaMathQA/results/*.json, e.g. results/peft_bench), tabulated with our math runs")
    args = ap.parse_args(argv)
    try:
        report = make_tables(args.runs, args.out, args.paper, figures=not args.no_figures,
                             peft_results=args.peft_results)
    except (FileNotFoundError, ValueError) as e:
        print(f"make tables: {e}", file=sys.stderr)
        return 2
    print("\n".join(report.lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
