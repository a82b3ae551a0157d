"""`make sweep-list NAME=x`: how many runs a sweep launches, and their overrides (logic in reporting/)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reporting.cli import sweep_list_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(sweep_list_main())
