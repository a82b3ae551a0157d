"""Runs on data.path record each split's content digest; the tables call a copy of the official splits
by that name when the digests equal the ones make prefetch recorded, and "NOT comparable" otherwise."""
from __future__ import annotations

from pathlib import Path

from runs import run

from benchmarks.fake_results import fake_result, put
from reporting import make_tables
from tasks.data import digests, fixtures


def test_a_save_to_disk_copy_records_the_digests_of_what_it_copied(tmp_path: Path) -> None:
    official = fixtures.glue_raw("rte")  # stands in for the hub's nyu-mll/glue rte (same schema)
    official.save_to_disk(str(tmp_path / "glue_rte_hf"))
    result = run(["task=glue/rte", f"data.path={tmp_path / 'glue_rte_hf'}", "trainer.max_steps=1"],
                 tmp_path / "runs")
    # oracle: the in-memory rows, digested before they were ever written to disk
    assert result["data_digest"] == {s: digests.split_digest(official[s]) for s in ("train", "validation")}
    hub = run(["task=glue/rte", "trainer.max_steps=1", "seed=43"], tmp_path / "runs")  # fixtures: no path
    assert hub["data_digest"] is None


def _tables(tmp_path: Path, copy: dict[str, str], record: dict, monkeypatch) -> str:
    monkeypatch.setattr(digests, "OFFICIAL", tmp_path / "digests.json")
    digests.record(record)
    runs = tmp_path / "runs"
    for seed in (42, 43):
        res = fake_result("glue/rte", "lora", seed, {"accuracy": 0.7}, source="path")
        put(runs, f"r{seed}", res | {"data_digest": copy})
    make_tables([runs], tmp_path / "out", figures=False)
    return (tmp_path / "out" / "tables" / "glue_roberta_base-path.md").read_text()


def test_tables_name_an_official_copy_by_its_digest(tmp_path: Path, monkeypatch) -> None:
    record = {"nyu-mll/glue/rte": {"train": "aaaa", "validation": "bbbb", "test": "cccc"}}
    md = _tables(tmp_path, {"train": "aaaa", "validation": "bbbb"}, record, monkeypatch)
    assert "(path data: copies of the official splits, by content digest)" in md
    assert "NOT comparable" not in md
    assert "glue/rte: path data, a copy of the official nyu-mll/glue/rte splits (digests train aaaa, " \
           "validation bbbb" in md


def test_tables_say_path_data_with_its_digest_when_it_differs(tmp_path: Path, monkeypatch) -> None:
    record = {"nyu-mll/glue/rte": {"train": "aaaa", "validation": "bbbb"}}
    md = _tables(tmp_path, {"train": "aaaa", "validation": "9999"}, record, monkeypatch)
    assert "(path data: NOT comparable to the paper; digests in the notes)" in md
    assert "glue/rte: path data, digests train aaaa, validation 9999: not a copy" in md
