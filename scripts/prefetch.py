"""`make prefetch NAME=<sweep> [ARGS=...]`: the sweep's models and datasets into the HF cache, then
checked to load with the hub off (preflight/prefetch.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from preflight.prefetch import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
