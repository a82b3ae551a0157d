"""make prefetch: each distinct model and dataset fetched once; with the hub unreachable, one line per
missing thing with its fix; split digests that do not depend on storage."""
from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import datasets

from preflight import prefetch
from tasks.config import sweeps
from tasks.data import digests

ROOT = Path(__file__).resolve().parents[1]


def test_each_distinct_model_and_dataset_is_fetched_once(monkeypatch, tmp_path, capsys):
    """Fig. 1 and Fig. 4 on CoLA and RTE, seed 42: 24 + 32 listed runs, by hand one model (RoBERTa-base)
    and two GLUE configs between them."""
    monkeypatch.setitem(sweeps.SWEEP_SETS, "pair", ("fig1_rank_params", "fig4_r_by_d"))
    monkeypatch.setattr(digests, "OFFICIAL", tmp_path / "digests.json")
    fetched = []
    monkeypatch.setattr(prefetch, "hub_unreachable", lambda: None)
    monkeypatch.setattr(prefetch, "download", lambda need: fetched.append(need.name))

    def check(needs):  # what the offline reload would report: digests for datasets
        return {n.name: {"error": None} | ({"rows": {"train": 3}, "digests": {"train": f"d-{n.name}"}}
                                           if n.kind == "dataset" else {}) for n in needs}

    monkeypatch.setattr(prefetch, "check_offline", check)
    assert prefetch.main(["pair", "task=glue/cola,glue/rte", "seed=42"]) == 0
    assert Counter(fetched) == {"FacebookAI/roberta-base": 1, "nyu-mll/glue/cola": 1, "nyu-mll/glue/rte": 1}
    out = capsys.readouterr().out
    assert "pair: 38 distinct runs need 1 model(s) and 2 dataset(s)" in out  # 24 + 32 - 2 x 9 shared
    assert digests.official() == {"nyu-mll/glue/cola": {"train": "d-nyu-mll/glue/cola"},
                                  "nyu-mll/glue/rte": {"train": "d-nyu-mll/glue/rte"}}


def test_hub_unreachable_names_each_missing_thing_with_its_fix(tmp_path):
    """As `make prefetch` runs it (hub on), but nothing answers at the hub's address, the cache is empty."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0",
           "HF_ENDPOINT": "http://127.0.0.1:9"}
    proc = subprocess.run([sys.executable, "scripts/prefetch.py", "squad", "seed=42"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "the hub cannot be reached (http://127.0.0.1:9 is unreachable" in proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr
    assert [line.split(":")[0] for line in lines] == [
        "missing model microsoft/deberta-v3-base", "missing dataset rajpurkar/squad",
        "missing dataset rajpurkar/squad_v2"]
    assert all("fix: run `make prefetch NAME=squad` where the hub is reachable" in line for line in lines)


def test_split_digest_depends_on_rows_not_storage(tmp_path):
    rows = {"sentence": ["a b", "c", "d e f", "g"], "label": [0, 1, 1, 0], "idx": [0, 1, 2, 3]}
    ds = datasets.Dataset.from_dict(rows)
    ds.save_to_disk(str(tmp_path / "copy"))
    copy = datasets.load_from_disk(str(tmp_path / "copy"))
    halves = datasets.concatenate_datasets([ds.select([0, 1]), ds.select([2, 3])])  # other chunks, indices
    reordered = datasets.Dataset.from_dict({k: rows[k] for k in ("label", "idx", "sentence")})  # columns
    assert len({digests.split_digest(d) for d in (ds, copy, halves, reordered)}) == 1
    changed = datasets.Dataset.from_dict(rows | {"label": [0, 1, 1, 1]})
    shuffled = ds.select([1, 0, 2, 3])
    assert digests.split_digest(changed) != digests.split_digest(ds) != digests.split_digest(shuffled)
    record = {"nyu-mll/glue/cola": {"train": "x", "validation": "y", "test": "z"}}
    assert digests.copy_of({"train": "x", "validation": "y"}, record) == "nyu-mll/glue/cola"
    assert digests.copy_of({"train": "x", "validation": "other"}, record) is None
