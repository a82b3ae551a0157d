"""tasks/result.py: a result round-trips through the one writer and reader; a file with a key missing,
extra or mistyped, or from a newer schema, is refused in one line naming it; the result.json files the
runner wrote before ``schema_version`` existed (results_v1/, from two tiny runs) still read."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from tasks import result as schema

ROOT = Path(__file__).resolve().parents[2]
V1 = sorted((Path(__file__).parent / "results_v1").glob("*.json"))


def v1(name: str = "glue_rte") -> dict:
    return json.loads(next(p for p in V1 if p.name.startswith(name)).read_text())


@pytest.mark.parametrize("path", V1, ids=lambda p: p.stem)
def test_a_file_written_before_schema_version_reads_as_it_is(path: Path) -> None:
    raw = json.loads(path.read_text())
    assert "schema_version" not in raw
    assert schema.read(path) == raw


def test_a_file_with_the_required_keys_only_reads(tmp_path: Path) -> None:
    """The public minimum (README): another tool's result.json need not carry what the runner adds."""
    minimal = {k: v for k, v in v1().items() if k in schema.REQUIRED}
    assert len(minimal) == 18 and "identity" not in minimal
    path = tmp_path / "result.json"
    path.write_text(json.dumps(minimal))
    assert schema.read(path) == minimal
    with pytest.raises(KeyError, match="missing: .*'identity'"):  # the runner must write every key
        schema.build(**minimal)


def test_a_result_round_trips_through_the_writer_and_the_reader(tmp_path: Path) -> None:
    fields = {k: v for k, v in v1("math").items()}  # the optional math keys too
    built = schema.build(**copy.deepcopy(fields))
    assert built["schema_version"] == schema.SCHEMA_VERSION == 1
    assert list(built) == [k.name for k in schema.KEYS if k.name in built]  # the schema's order
    path = tmp_path / "run" / schema.RESULT
    schema.write(path, built)
    back = schema.read(path)
    assert back == built and {k: v for k, v in back.items() if k != "schema_version"} == fields
    assert not list(path.parent.glob(".*.tmp"))


def _refusal(tmp_path: Path, data: object) -> str:
    path = tmp_path / "result.json"
    path.write_text(json.dumps(data))
    with pytest.raises(schema.ResultError) as caught:
        schema.read(path)
    message = str(caught.value)
    assert message and "\n" not in message
    return message


@pytest.mark.parametrize("change, says", [
    (lambda r: r.pop("seed"), "missing keys ['seed']"),
    (lambda r: [r.pop("best"), r.pop("config")], "missing keys ['best', 'config']"),
    (lambda r: r.update(selection_rule="best_select_epoch"), "keys ['selection_rule'] are not result.json"),
    (lambda r: r.update(seed="42"), 'seed="42" is not an integer'),
    (lambda r: r.update(d=True), "d=true is not an integer"),
    (lambda r: r.update(capaboost=1), "capaboost=1 is not true/false"),
    (lambda r: r.update(density="0.5"), 'density="0.5" is not a number'),
    (lambda r: r.update(metrics=[0.5]), "metrics=[0.5] is not an object"),
    (lambda r: r.update(task=None), "task=null is not a string"),
    (lambda r: r.update(status="running"), 'status="running" is not one of completed, diverged'),
    (lambda r: r.update(schema_version=2), "schema_version 2 is newer than this code reads (1)"),
    (lambda r: r.update(schema_version="1"), 'schema_version="1" is not an integer'),
])
def test_a_bad_file_is_refused_in_one_line_naming_why(change, says, tmp_path: Path) -> None:
    data = v1()
    change(data)
    assert says in _refusal(tmp_path, data)


@pytest.mark.parametrize("text, says", [("", "empty"), ('{"task": "glue/rte"', "not complete JSON"),
                                        ("[1, 2]", "a JSON list, not an object"),
                                        (b"\xff\xfe", "not UTF-8 at byte 0")])
def test_a_torn_file_is_refused_in_one_line(text, says, tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(schema.ResultError, match=re.escape(says)):
        schema.read(path)


def test_the_writer_refuses_what_the_reader_would_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    bad = v1() | {"best": {"accuracy": float("nan")}}
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        schema.write(path, bad)
    with pytest.raises(schema.ResultError, match="missing keys"):
        schema.write(path, {"task": "glue/rte"})
    assert not path.exists() and not list(tmp_path.glob(".*"))


def test_build_refuses_an_unknown_or_a_missing_key() -> None:
    fields = v1()
    with pytest.raises(KeyError, match=r"not in tasks/result.py: \['acc'\]"):
        schema.build(**fields, acc=0.5)
    fields.pop("history")
    with pytest.raises(KeyError, match=r"missing: \['history'\]"):
        schema.build(**fields)


def test_every_key_is_documented_in_docs_results() -> None:
    """docs/results.md holds the table tasks/result.py makes of its keys (python -m tasks.result)."""
    text = (ROOT / "docs" / "results.md").read_text()
    assert schema.table() in text
    rows = re.findall(r"^\| `(\w+)` \|", text, flags=re.M)
    assert rows == [k.name for k in schema.KEYS] and len(rows) > 40
