"""`make tables`: paper tables and figures from result.json files (logic in reporting/)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reporting.cli import tables_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(tables_main())
