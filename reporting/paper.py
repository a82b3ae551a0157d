"""Published numbers (results/paper/<table>.csv), as data: x100 scale, empty cell = not published to us.

Only rows with a `peft` name can sit beside one of our rows (same PEFT, d, density); the others
(e.g. ProPETL baselines) are shown as reference rows of their own.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PAPER_DIR = Path(__file__).resolve().parents[1] / "results" / "paper"
META = ("method", "model", "peft", "d", "density", "reference")


@dataclass
class PaperRow:
    method: str
    model: str
    peft: str
    d: int | None
    density: float | None
    reference: str
    values: dict[str, float] = field(default_factory=dict)  # "task:metric" | avg | group | params_pct

    @property
    def has_values(self) -> bool:
        return bool(self.values)

    def matches(self, key: dict[str, Any]) -> bool:
        """Same PEFT, same branches/density, plain random masks, full data, no rank/seed ablation."""
        if not self.peft or key.get("peft") != self.peft:
            return False
        if self.peft.startswith("capaboost"):
            if key.get("d") != self.d or key.get("density") != self.density:
                return False
            if key.get("mask") not in (None, "random"):
                return False
        return key.get("train_limit") in (None, 0)


def _number(text: str, where: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError as e:
        raise ValueError(f"{where}: {text!r} is not a number") from e


def load_paper(table: str, paper_dir: str | os.PathLike = PAPER_DIR) -> list[PaperRow]:
    """Rows of results/paper/<table>.csv ([] when the paper has no such table)."""
    path = Path(paper_dir) / f"{table}.csv"
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for i, rec in enumerate(csv.DictReader(f), start=2):
            where = f"{path}:{i}"
            d, density = _number(rec.get("d") or "", where), _number(rec.get("density") or "", where)
            values = {k: v for k, raw in rec.items() if k not in META and k is not None
                      for v in [_number(raw or "", f"{where} column {k}")] if v is not None}
            rows.append(PaperRow(rec["method"], rec["model"], rec.get("peft") or "",
                                 int(d) if d is not None else None, density, rec.get("reference") or "",
                                 values))
    return rows
