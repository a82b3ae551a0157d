"""Helpers for tests that drive the runner in-process (one interpreter, no per-run import cost)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
# Small enough for 2 shared CPU cores: a few steps, a few evaluation rows, no W&B, no progress bars.
TINY = ["model=tiny", "data=fixture", "logger=none", "trainer.progress=false", "trainer.batch_size=8",
        "data.train_limit=16", "data.eval_limit=8", "trainer.epochs=1", "trainer.max_seq_length=48",
        "trainer.doc_stride=16", "trainer.num_workers=0"]


def compose(overrides: list[str]) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from tasks.config.runspec import register

    register()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def spec_for(overrides: list[str], runs_root: Path, tiny: bool = True) -> Any:
    from tasks.config.runspec import resolve

    given = {o.split("=", 1)[0] for o in overrides}
    defaults = [o for o in TINY if o.split("=", 1)[0] not in given] if tiny else []
    return resolve(compose([*defaults, f"runs_root={runs_root}", *overrides]))


def run(overrides: list[str], runs_root: Path, callbacks: tuple = (), tiny: bool = True) -> dict:
    from tasks.runner import execute

    return execute(spec_for(overrides, runs_root, tiny), callbacks=callbacks)
