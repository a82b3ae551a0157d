"""`make demo`: the offline CPU experiment (AFINN data, LoRA vs CapaBoost sweep, tables, capacity check).

    python scripts/demo.py            # full: 24 runs, ~15 min on 2 cores
    python scripts/demo.py --fast     # 1 seed, 2 arms, a few steps (what the test suite runs)
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
for key, value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                   "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(key, value)

from demo.driver import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
