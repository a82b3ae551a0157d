"""`make preflight NAME=<sweep> GPU_MEM=<GiB> [GPU=<name>] [GPUS=<n>] [ARGS=...]`: check a sweep offline."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from preflight.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
