"""`make tables` on hostile result files: a metric that is NaN, Infinity, null or a string is refused by
the result validation (one line naming the file), never tabulated as "nan ± nan", and the paired step
still runs on the rest."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.fake_results import fake_result, put

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (42, 43, 44)


def tree(root: Path) -> None:
    """Three seeds of LoRA r=3 and of CapaBoost r=4 d=2 on STS-B (a paired table)."""
    for peft, r, d, base in (("lora", 3, 1, 0.80), ("capaboost_lora", 4, 2, 0.82)):
        for i, seed in enumerate(SEEDS):
            x = base + 0.01 * i
            put(root, f"{peft}-{seed}", fake_result(
                "glue/stsb", peft, seed, {"pearson": x, "spearman": x}, r=r, d=d, sweeps=["x"],
                params={"trainable": 600, "effective": 600, "peft": 300, "total": 10**6}))


@pytest.mark.parametrize("bad, why", [("NaN", "not finite"), ("Infinity", "not finite"),
                                      ("-Infinity", "not finite"), ("null", "not a number"),
                                      ('"0.99"', "not a number")])
def test_non_finite_or_non_numeric_metric_is_skipped_by_name(bad, why, tmp_path):
    tree(tmp_path / "runs")
    hostile = tmp_path / "runs" / f"capaboost_lora-{SEEDS[0]}" / "result.json"
    text = hostile.read_text()
    # the metric as a hand-edited or non-strict writer leaves it: bare NaN / Infinity, null, a string
    value = json.loads(text)["best"]["pearson"]
    hostile.write_text(text.replace(f'"pearson": {value}', f'"pearson": {bad}', 1))
    assert bad in hostile.read_text()
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "scripts/make_tables.py", "--runs", str(tmp_path / "runs"),
                           "--out", str(out), "--no-figures"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    skipped = [line for line in proc.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skipped) == 1 and str(hostile.resolve()) in skipped[0] and "best.pearson" in skipped[0]
    assert why in skipped[0]
    assert "read 6 result.json file(s): 5 completed run(s) used" in proc.stdout
    tables = sorted((out / "tables").glob("*.md"))
    assert tables and not any("nan" in p.read_text().lower() for p in tables)
    paired = [p for p in tables if p.name.endswith("-paired.md")]
    assert len(paired) == 1
    rows = [line for line in paired[0].read_text().splitlines() if "| STS-B P |" in line]
    assert len(rows) == 1 and rows[0].split("|")[8].strip() == "2"  # the two seeds both rows still have
