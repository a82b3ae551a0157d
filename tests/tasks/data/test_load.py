"""Split protocols (sizes, disjointness, the official permutation), and loading from local copies."""
import json
from functools import partial
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from tasks.data import cache as datacache
from tasks.data import fixtures
from tasks.data import load as data
from tasks.data import original_formats as formats
from tasks.data.load import load_glue, load_squad, load_vtab
from tasks.suites import glue
from tasks.training import models


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path_factory, monkeypatch):
    """Local files are cached as Arrow under HF_DATASETS_CACHE (tasks.data.cache): a fresh one per test."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("hf_datasets")))


def col(ds, name):
    """A column as a plain list (datasets 5 returns a lazy Column)."""
    return list(ds[name])


def official_order(n, seed=42):
    """LINs-lab/CapaBoost run_glue.py: torch.randperm under a Generator seeded with dataset_seed = 42."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return torch.randperm(n, generator=generator).tolist()


@pytest.mark.parametrize("task", ["cola", "rte", "mrpc", "stsb"])
def test_small_tasks_halve_the_dev_set(task):
    raw = fixtures.glue_raw(task)
    dev = raw["validation"]
    out = load_glue(task, "fixture", "split")
    assert list(out) == ["train", "select", "report"]
    order = official_order(len(dev))
    half = len(dev) // 2
    assert col(out["select"], "idx") == [dev[i]["idx"] for i in order[:half]]
    assert col(out["report"], "idx") == [dev[i]["idx"] for i in order[half:]]
    assert not set(col(out["select"], "idx")) & set(col(out["report"], "idx"))
    assert sorted(col(out["select"], "idx") + col(out["report"], "idx")) == sorted(col(dev, "idx"))
    assert col(out["train"], "idx") == col(raw["train"], "idx")


@pytest.mark.parametrize("task", ["sst2", "qqp", "qnli", "mnli"])
def test_large_tasks_hold_out_training_examples(task):
    raw = fixtures.glue_raw(task)
    n = len(raw["train"])
    k = min(1000, n // 4)
    out = load_glue(task, "fixture", "split")
    order = official_order(n)
    assert col(out["select"], "idx") == [raw["train"][i]["idx"] for i in order[:k]]
    assert col(out["train"], "idx") == [raw["train"][i]["idx"] for i in order[k:]]
    assert not set(col(out["select"], "idx")) & set(col(out["train"], "idx"))
    assert len(out["select"]) + len(out["train"]) == n
    dev = raw["validation_matched" if task == "mnli" else "validation"]
    assert col(out["report"], "idx") == col(dev, "idx")
    if task == "mnli":
        assert col(out["report_mismatched"], "premise") == col(raw["validation_mismatched"], "premise")
    else:
        assert "report_mismatched" not in out


def test_holdout_is_1000_for_real_sized_train_sets():
    raw = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"sentence": ["x"] * 5000, "label": [0] * 5000,
                                             "idx": list(range(5000))}),
        "validation": datasets.Dataset.from_dict({"sentence": ["y"] * 10, "label": [1] * 10,
                                                  "idx": list(range(10))})})
    out = data.apply_glue_protocol("sst2", raw, "split")
    assert (len(out["select"]), len(out["train"]), len(out["report"])) == (1000, 4000, 10)
    limited = data.apply_glue_protocol("sst2", raw, "split", train_limit=300)
    # official --max_train_samples: the first N of the already permuted training remainder
    assert col(limited["train"], "idx") == official_order(5000)[1000:1300]


def test_dev_protocol_trains_on_everything_and_selects_on_dev():
    for task in ("cola", "sst2", "mnli"):
        raw = fixtures.glue_raw(task)
        out = load_glue(task, "fixture", "dev")
        dev = raw["validation_matched" if task == "mnli" else "validation"]
        assert col(out["train"], "idx") == col(raw["train"], "idx")
        assert col(out["select"], "idx") == col(out["report"], "idx") == col(dev, "idx")


def test_train_limit_and_data_seed():
    out = load_glue("cola", "fixture", "dev", train_limit=10)
    train = fixtures.glue_raw("cola")["train"]
    assert col(out["train"], "idx") == [train[i]["idx"] for i in official_order(64)[:10]]
    assert len(load_glue("cola", "fixture", train_limit=10_000)["train"]) == 64
    a = col(load_glue("rte", "fixture", seed=42)["select"], "idx")
    assert a == col(load_glue("rte", "fixture", seed=42)["select"], "idx")
    assert a != col(load_glue("rte", "fixture", seed=7)["select"], "idx")


@pytest.mark.parametrize("kwargs, word", [
    ({"task": "wnli", "source": "fixture"}, "task"),
    ({"task": "cola", "source": "fixture", "protocol": "test"}, "protocol"),
    ({"task": "cola", "source": "fixture", "seed": "42"}, "seed"),
    ({"task": "cola", "source": "fixture", "train_limit": 0}, "train_limit"),
    ({"task": "cola", "source": "/nonexistent/glue"}, "source"),
    ({"task": "cola", "source": ""}, "source"),
])
def test_load_glue_rejects_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        load_glue(**kwargs)


def test_hub_source_asks_for_the_real_dataset_ids(monkeypatch):
    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append(args)
        name = args[0]
        return fixtures.glue_raw(args[1]) if name == "nyu-mll/glue" else fixtures.squad_raw(
            "v2" if name.endswith("v2") else "v1")

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert len(load_glue("mrpc", "hub")["report"]) == 16
    load_squad("v1", "hub")
    load_squad("v2", "hub")
    assert calls == [("nyu-mll/glue", "mrpc"), ("rajpurkar/squad",), ("rajpurkar/squad_v2",)]


# --- local copies ---------------------------------------------------------------------------------

def test_save_to_disk_directory_gives_the_same_splits(tmp_path):
    for task in ("stsb", "mnli"):
        fixtures.glue_raw(task).save_to_disk(str(tmp_path / task))
        for source in (tmp_path, tmp_path / task):  # the root with <task>/ inside, or the task dir itself
            local, fixture = load_glue(task, source), load_glue(task, "fixture")
            assert list(local) == list(fixture)
            for split in fixture:
                assert local[split].to_dict() == fixture[split].to_dict()


def _write(path, lines, bom=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(("\ufeff" if bom else "") + "\n".join(lines) + "\n", encoding="utf-8")


def test_glue_tsv_cola_has_no_header(tmp_path):
    rows = [f"gj04\t{i % 2}\t{'' if i % 2 else '*'}\tSentence number {i} with \"a quote." for i in range(10)]
    _write(tmp_path / "CoLA" / "train.tsv", rows)
    _write(tmp_path / "CoLA" / "dev.tsv", rows[:6])
    out = load_glue("cola", tmp_path, "dev")
    assert col(out["train"], "sentence")[3] == 'Sentence number 3 with "a quote.'
    assert col(out["train"], "label") == [i % 2 for i in range(10)]
    assert out["train"].features["label"].names == ["unacceptable", "acceptable"]
    assert len(load_glue("cola", tmp_path / "CoLA", "split")["select"]) == 3


def test_glue_tsv_mrpc_header_with_bom_and_stsb_floats(tmp_path):
    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
    mrpc = [header] + [f"{i % 2}\t{i}\t{i + 100}\tleft {i}\tright {i}" for i in range(8)]
    _write(tmp_path / "MRPC" / "train.tsv", mrpc, bom=True)
    _write(tmp_path / "MRPC" / "dev.tsv", mrpc[:5], bom=True)
    out = load_glue("mrpc", tmp_path, "dev")
    assert col(out["train"], "sentence1")[2] == "left 2" and col(out["train"], "sentence2")[2] == "right 2"
    assert col(out["train"], "label") == [i % 2 for i in range(8)]

    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    stsb = [header] + [f"{i}\tmain\tf\t2012\t{i}\tnone\tnone\ta {i}\tb {i}\t{i * 0.625:.3f}"
                       for i in range(9)]
    _write(tmp_path / "STS-B" / "train.tsv", stsb)
    _write(tmp_path / "STS-B" / "dev.tsv", stsb)
    out = load_glue("stsb", tmp_path, "dev")
    assert np.allclose(col(out["train"], "label"), [i * 0.625 for i in range(8 + 1)])


def test_glue_tsv_mnli_gold_label_and_dev_files(tmp_path):
    cols = ["index", "promptID", "pairID", "genre", "s1b", "s2b", "s1p", "s2p", "sentence1", "sentence2"]
    labels = ["entailment", "neutral", "contradiction"]

    def rows(n, with_votes):
        header = cols + (["label1", "label2", "label3", "label4", "label5"] if with_votes else ["label1"])
        lines = ["\t".join(header + ["gold_label"])]
        for i in range(n):
            votes = [labels[i % 3]] * (5 if with_votes else 1)
            lines.append("\t".join([str(i), "p", "q", "g", "x", "y", "x", "y", f"prem {i}", f"hyp {i}",
                                    *votes, labels[i % 3]]))
        return lines

    _write(tmp_path / "MNLI" / "train.tsv", rows(12, False))
    _write(tmp_path / "MNLI" / "dev_matched.tsv", rows(6, True))
    _write(tmp_path / "MNLI" / "dev_mismatched.tsv", rows(4, True))
    out = load_glue("mnli", tmp_path, "split")
    assert len(out["report"]) == 6 and len(out["report_mismatched"]) == 4
    assert len(out["select"]) + len(out["train"]) == 12
    assert col(out["report"], "label") == [i % 3 for i in range(6)]
    assert col(out["report"], "premise")[1] == "prem 1" and col(out["report"], "hypothesis")[1] == "hyp 1"


def test_glue_tsv_skips_truncated_qqp_lines_and_rejects_unknown_labels(tmp_path):
    header = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"
    lines = [header] + [f"{i}\t{i}\t{i}\tq{i}?\tp{i}?\t{i % 2}" for i in range(6)] + ["99\t1\t2\tbroken"]
    _write(tmp_path / "train.tsv", lines)
    _write(tmp_path / "dev.tsv", lines[:3])
    assert len(load_glue("qqp", tmp_path, "dev")["train"]) == 6
    _write(tmp_path / "dev.tsv", [header, "1\t1\t2\ta\tb\tmaybe"])
    with pytest.raises(ValueError, match="maybe"):
        load_glue("qqp", tmp_path, "dev")


def test_local_directory_without_data_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="neither"):
        load_glue("rte", tmp_path)
    (tmp_path / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    with pytest.raises(ValueError, match="dev.tsv"):
        load_glue("rte", tmp_path)


def _rte_tsv(folder, examples):
    labels = ("entailment", "not_entailment")
    return ["index\tsentence1\tsentence2\tlabel"] + [
        f"{i}\t{ex['sentence1']}\t{ex['sentence2']}\t{labels[ex['label']]}" for i, ex in enumerate(examples)]


def test_local_tsv_is_parsed_once_and_its_tokenisation_cached(tmp_path, monkeypatch):
    """As for hub data: a second run neither re-parses the files nor re-tokenises (datasets' map cache)."""
    raw = fixtures.glue_raw("rte")
    for split, name in (("train", "train.tsv"), ("validation", "dev.tsv")):
        _write(tmp_path / "RTE" / name, _rte_tsv(tmp_path, raw[split]))
    parsed = []
    read = formats._read_tsv
    monkeypatch.setattr(formats, "_read_tsv", lambda task, path: parsed.append(path.name) or read(task, path))
    first = load_glue("rte", tmp_path)
    assert sorted(parsed) == ["dev.tsv", "train.tsv"]
    second = load_glue("rte", tmp_path)
    assert len(parsed) == 2  # the second load parsed nothing
    fixture = load_glue("rte", "fixture")
    for split in fixture:
        assert second[split].to_dict() == first[split].to_dict() == fixture[split].to_dict()
    files = [Path(f["filename"]) for f in second["train"].cache_files]
    assert files and all(f.is_relative_to(datacache.cache_root()) for f in files)

    def tokenised(ds):  # what tasks/suites/glue.py does, with a tokenizer rebuilt as a new run would
        tok = models.build_word_tokenizer(col(ds, "sentence1"))
        encode = partial(glue._encode, tokenizer=tok, keys=["sentence1", "sentence2"], max_length=32)
        return ds.map(encode, batched=True, remove_columns=ds.column_names)

    a = tokenised(first["train"])
    (cache_file,) = [Path(f["filename"]) for f in a.cache_files]
    written = cache_file.stat().st_mtime_ns
    b = tokenised(second["train"])
    assert [Path(f["filename"]) for f in b.cache_files] == [cache_file]
    assert cache_file.stat().st_mtime_ns == written and b.to_dict() == a.to_dict()  # read, not recomputed

    _write(tmp_path / "RTE" / "dev.tsv", _rte_tsv(tmp_path, list(raw["validation"])[:-1]))  # an edited file
    assert len(load_glue("rte", tmp_path, "dev")["report"]) == len(raw["validation"]) - 1 and len(parsed) == 4


def test_local_squad_json_is_parsed_once(tmp_path, monkeypatch):
    raw = fixtures.squad_raw("v1")
    for name in ("train-v1.1.json", "dev-v1.1.json"):
        (tmp_path / name).write_text(json.dumps({"version": "1.1", "data": _squad_articles(raw["train"])}))
    parsed = []
    read = formats._read_squad_json
    monkeypatch.setattr(formats, "_read_squad_json", lambda path: parsed.append(path.name) or read(path))
    first, second = load_squad("v1", tmp_path), load_squad("v1", tmp_path)
    assert len(parsed) == 2
    assert second["train"].to_dict() == first["train"].to_dict() == raw["train"].to_dict()


def _squad_articles(examples):
    """The official JSON release's nesting (data -> paragraphs -> qas), including is_impossible."""
    return [{"title": ex["title"], "paragraphs": [{"context": ex["context"], "qas": [{
        "id": ex["id"], "question": ex["question"], "is_impossible": not ex["answers"]["text"],
        "answers": [{"text": t, "answer_start": s} for t, s in
                    zip(ex["answers"]["text"], ex["answers"]["answer_start"], strict=True)]}]}]}
        for ex in examples]


# --- SQuAD ----------------------------------------------------------------------------------------

def test_squad_protocol_and_local_copies(tmp_path):
    out = load_squad("v2", "fixture")
    assert list(out) == ["train", "select", "report"]
    assert col(out["select"], "id") == col(out["report"], "id")
    assert col(out["report"], "id") == col(fixtures.squad_raw("v2")["validation"], "id")
    limited = load_squad("v1", "fixture", train_limit=5)
    train = fixtures.squad_raw("v1")["train"]
    assert col(limited["train"], "id") == [train[i]["id"] for i in official_order(48)[:5]]

    fixtures.squad_raw("v1").save_to_disk(str(tmp_path / "squad"))
    assert load_squad("v1", tmp_path)["report"].to_dict() == out_v1_report()

    # the official JSON release (data -> paragraphs -> qas), including is_impossible
    raw = fixtures.squad_raw("v2")
    articles = _squad_articles(raw["validation"])
    folder = tmp_path / "json"
    folder.mkdir()
    for name in ("train-v2.0.json", "dev-v2.0.json"):
        (folder / name).write_text(json.dumps({"version": "v2.0", "data": articles}))
    loaded = load_squad("v2", folder)
    assert loaded["report"].to_dict() == raw["validation"].to_dict()


def out_v1_report():
    return fixtures.squad_raw("v1")["validation"].to_dict()


def test_squad_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="version"):
        load_squad("v1.1", "fixture")
    with pytest.raises(ValueError, match="source"):
        load_squad("v1", tmp_path)


# --- VTAB -----------------------------------------------------------------------------------------

def _vtab_folder(root, name, sizes, num_classes, bad_line=None):
    folder = root / name
    (folder / "images").mkdir(parents=True)
    lists = {}
    for split, n in sizes.items():
        lines = []
        for i in range(n):
            rel = f"images/{split} {i}.png"  # a space in the path: labels are split off the right
            mode = "L" if i % 2 else "RGB"  # grayscale files must come back as RGB
            Image.new(mode, (8, 6), color=(i * 10) if mode == "L" else (i * 10, 0, 0)).save(folder / rel)
            lines.append(f"{rel} {i % num_classes}")
        lists[split] = lines
    lists["train800val200"] = lists["train800"] + lists["val200"]
    if bad_line is not None:
        lists["test"] = lists["test"] + [bad_line]
    for split, lines in lists.items():
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return folder


def test_vtab_image_lists_tune_and_final(tmp_path):
    _vtab_folder(tmp_path, "dmlab", {"train800": 5, "val200": 3, "test": 4}, 6)
    tune = load_vtab("dmlab", tmp_path, "tune")
    assert [len(tune[s]) for s in ("train", "select", "report")] == [5, 3, 3]
    final = load_vtab("dmlab", tmp_path / "dmlab", "final")  # the dataset folder itself also works
    assert [len(final[s]) for s in ("train", "select", "report")] == [8, 4, 4]
    assert col(final["train"], "label") == [i % 6 for i in range(5)] + [i % 6 for i in range(3)]
    for ex in final["train"]:
        assert ex["image"].mode == "RGB" and ex["image"].size == (8, 6)
    assert load_vtab("dmlab", "fixture", "final")["train"].features["label"].num_classes == 6


def test_vtab_rejects_bad_lists_and_arguments(tmp_path):
    _vtab_folder(tmp_path, "kitti", {"train800": 2, "val200": 2, "test": 2}, 4, bad_line="images/x.png 9")
    with pytest.raises(ValueError, match="label 9"):
        load_vtab("kitti", tmp_path, "final")
    (tmp_path / "kitti" / "val200.txt").write_text("images/missing.png 1\n")
    with pytest.raises(ValueError, match="not found"):
        load_vtab("kitti", tmp_path, "tune")
    with pytest.raises(ValueError, match="name"):
        load_vtab("imagenet", "fixture")
    with pytest.raises(ValueError, match="protocol"):
        load_vtab("kitti", "fixture", "split")
    with pytest.raises(ValueError, match="hub_id"):
        load_vtab("kitti", "hub")
    with pytest.raises(ValueError, match="source"):
        load_vtab("dtd", tmp_path)
