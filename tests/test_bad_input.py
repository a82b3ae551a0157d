"""Bad values and bad data: each is one line and exit 2 before a run directory exists.

Values that used to pass validation (NaN and infinite numbers, a negative weight decay, a model.path the
model ignores or cannot read, a runs_root or checkpoints that is a file), and data that does not fit its
task's schema (an STS-B score of 37, a CoLA label of 2, wrong columns, an empty train split, a byte that
is not UTF-8, fewer training examples than one step). The data cases are planted in a copy of the
fixture data given as ``data.path``; the repaired copy then trains to the fixture run's numbers.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from runs import ROOT, run, spec_for

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline",
       "TOKENIZERS_PARALLELISM": "false"}
STSB = ["task=glue/stsb", "peft=capaboost_lora"]


def cli(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "run.py", "model=tiny", "data=fixture", "logger=none",
               "trainer.progress=false"]
    return subprocess.run([*command, *args], cwd=ROOT, env=ENV, capture_output=True, text=True)


def one_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, (proc.returncode, proc.stderr[-2000:])
    return lines[0]


@pytest.mark.parametrize("override, key", [
    ("trainer.lr=nan", "trainer.lr"), ("trainer.epochs=nan", "trainer.epochs"),
    ("trainer.epochs=inf", "trainer.epochs"), ("trainer.max_grad_norm=nan", "trainer.max_grad_norm"),
    ("trainer.save_every_minutes=nan", "trainer.save_every_minutes"),
    ("trainer.weight_decay=-5", "trainer.weight_decay"), ("trainer.lr=-1e-3", "trainer.lr"),
    ("model.path=/etc", "model.path"),
])
def test_hostile_values_are_refused_naming_the_key(override, key, tmp_path):
    from tasks.config.runspec import ConfigError

    with pytest.raises(ConfigError, match=key) as error:
        spec_for([*STSB, override], tmp_path)
    assert "\n" not in str(error.value)
    assert not any(tmp_path.iterdir())


def test_hostile_values_exit_2_on_the_command_line(tmp_path):
    for override in ("trainer.lr=nan", "trainer.max_grad_norm=nan"):
        line = one_line(cli(*STSB, override, f"runs_root={tmp_path}"))
        assert line.startswith("config error: " + override.split("=")[0])
    assert not any(tmp_path.iterdir())


def test_model_path_at_a_junk_directory_names_the_file(tmp_path):
    from tasks.config.runspec import ConfigError

    junk = tmp_path / "model"
    junk.mkdir()
    (junk / "config.json").write_text("{not json")
    runs = tmp_path / "runs"
    with pytest.raises(ConfigError, match=r"config.json is not readable JSON"):
        spec_for([*STSB, "model=roberta-base", f"model.path={junk}"], runs, tiny=False)
    (junk / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    with pytest.raises(ConfigError, match="no tokenizer files"):  # not "You need sentencepiece ..."
        spec_for([*STSB, "model=roberta-base", f"model.path={junk}"], runs, tiny=False)
    assert not runs.exists()


def test_runs_root_or_checkpoints_that_is_a_file(tmp_path):
    from tasks.config.runspec import ConfigError

    afile = tmp_path / "afile"
    afile.write_text("x")
    for root in (afile, afile / "below"):
        with pytest.raises(ConfigError, match=f"{afile} is a file, not a directory"):
            spec_for(STSB, root)
    line = one_line(cli(*STSB, f"runs_root={afile}"))
    assert line.startswith("config error:") and str(afile) in line
    run_dir = Path(spec_for(STSB, tmp_path / "runs").run_dir)
    run_dir.mkdir(parents=True)
    (run_dir / "checkpoints").write_text("not a directory")
    with pytest.raises(ConfigError, match="checkpoints is a file"):
        spec_for(STSB, tmp_path / "runs")


# --- data --------------------------------------------------------------------------------------------

def saved(task: str, where: Path, change=None) -> Path:
    """The fixture data of ``task`` as a save_to_disk folder (data.path), optionally changed first."""
    from tasks.data import fixtures

    raw = fixtures.glue_raw(task)
    if change is not None:
        raw = change(raw)
    raw.save_to_disk(str(where))
    return where


def relabel(split: str, row: int, value, as_int: bool = False):
    import datasets

    def change(raw):
        out = dict(raw)
        ds = raw[split]
        if as_int:  # a ClassLabel column refuses 2 at write time; a plain integer column (a TSV) does not
            ds = ds.cast_column("label", datasets.Value("int64"))
        out[split] = ds.map(lambda ex, i: {"label": value if i == row else ex["label"]}, with_indices=True)
        return datasets.DatasetDict(out)
    return change


def rename(raw):
    import datasets

    return datasets.DatasetDict({k: v.rename_column("sentence1", "text_a") for k, v in raw.items()})


@pytest.mark.parametrize("task, change, words", [
    ("stsb", relabel("train", 3, 37.0), ["label 37 at row", "score in [0, 5]"]),
    ("stsb", relabel("validation", 0, float("nan")), ["label nan", "1 such row"]),
    ("cola", relabel("train", 5, 2, as_int=True), ["label 2 at row", "class id in 0..1"]),
    ("stsb", rename, ["lacks column(s) ['sentence1']"]),
])
def test_bad_data_is_one_line_before_a_run_directory(task, change, words, tmp_path):
    from tasks.data.check import DataError

    data = saved(task, tmp_path / "data", change)
    over = [f"task=glue/{task}", "peft=capaboost_lora", f"data.path={data}", "data.train_limit=null"]
    runs = tmp_path / "runs"
    with pytest.raises(DataError) as error:
        run(over, runs)
    message = str(error.value)
    assert "\n" not in message and all(w in message for w in words), message
    assert str(data) in message and f"glue/{task}" in message
    assert not runs.exists()   # no run directory, no status.json, no lock


def stsb_tsv(folder: Path, n_train: int | None = None) -> Path:
    """The STS-B fixture as the original GLUE TSV download (train.tsv, dev.tsv)."""
    from tasks.data import fixtures

    raw = fixtures.glue_raw("stsb")
    folder.mkdir()
    for split, name in (("train", "train.tsv"), ("validation", "dev.tsv")):
        rows = ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"]
        rows += [f"{i}\tg\tf\ty\t{i}\ts\ts\t{ex['sentence1']}\t{ex['sentence2']}\t{ex['label']!r}"
                 for i, ex in enumerate(raw[split]) if split != "train" or n_train is None or i < n_train]
        (folder / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def test_empty_train_split(tmp_path):
    from tasks.data.check import DataError

    folder = stsb_tsv(tmp_path / "STS-B", n_train=0)
    with pytest.raises(DataError, match=f"{folder / 'train.tsv'}: no rows read"):
        run([*STSB, f"data.path={folder}"], tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_non_utf8_tsv_and_the_repaired_rerun(tmp_path):
    """A GLUE TSV with one byte that is not UTF-8: exit 2, one line naming the file; the repaired file
    trains, and to the numbers of the same data given as a save_to_disk folder."""
    folder = stsb_tsv(tmp_path / "STS-B")
    good = (folder / "train.tsv").read_bytes()
    (folder / "train.tsv").write_bytes(good.replace(b"\t", b"\t\xff", 40).replace(b"\t\xff", b"\t", 39))
    runs = tmp_path / "runs"
    line = one_line(cli(*STSB, f"data.path={folder}", f"runs_root={runs}", "trainer.epochs=1",
                        "data.train_limit=16", "data.eval_limit=8", "trainer.batch_size=8"))
    assert line.startswith("data error:") and str(folder / "train.tsv") in line and "not UTF-8" in line
    assert "0xff" in line and not runs.exists()

    (folder / "train.tsv").write_bytes(good)   # repaired: the same numbers as the folder of the same data
    over = [*STSB, "trainer.epochs=1"]
    from_tsv = run([*over, f"data.path={folder}"], runs)
    from_disk = run([*over, f"data.path={saved('stsb', tmp_path / 'disk')}"], runs)
    assert from_tsv["status"] == "completed" and from_tsv["history"] == from_disk["history"]


def test_fewer_examples_than_one_step(tmp_path):
    from tasks.data.check import DataError

    with pytest.raises(DataError, match=r"trainer.epochs=0.001 is less than one optimizer step"):
        run([*STSB, "trainer.epochs=0.001"], tmp_path)
    assert not any(tmp_path.iterdir())
