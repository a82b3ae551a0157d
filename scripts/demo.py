"""`make demo`: the offline CPU experiment (AFINN valence, LoRA vs CapaBoost sweep, tables, capacity check).

    python scripts/demo.py            # the demo: sweeps/demo.yaml at the chosen learning rates
    python scripts/demo.py --tune     # the lr tuning (sweeps/demo_tune.yaml), writes sweeps/demo_arm/*.yaml
    python scripts/demo.py --fast     # 1 seed, 2 arms, a few steps (what the test suite runs)
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from demo.driver import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
