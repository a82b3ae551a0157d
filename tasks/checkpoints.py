"""Which checkpoint a restarted run resumes from."""
from __future__ import annotations

from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

CHECKPOINTS = "checkpoints"


def last_complete_checkpoint(directory: Path) -> str | None:
    """The newest checkpoint the Trainer finished writing (trainer_state.json comes last): a run
    killed while saving resumes from the previous one instead of failing on a partial directory."""
    if not directory.is_dir():
        return None
    done = [p for p in directory.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
            if p.name.rsplit("-", 1)[1].isdigit() and (p / "trainer_state.json").is_file()]
    return str(max(done, key=lambda p: int(p.name.rsplit("-", 1)[1]))) if done else None
