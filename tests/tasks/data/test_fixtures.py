"""Fixtures have the hub's schema, a learnable signal, exact SQuAD spans, and are deterministic."""
import numpy as np
import pytest

from tasks.data import fixtures
from tasks.facts.glue import GLUE
from tasks.facts.vtab import VTAB

HUB_COLUMNS = {  # nyu-mll/glue column order, written out independently of tasks.facts.glue
    "cola": ["sentence", "label", "idx"], "sst2": ["sentence", "label", "idx"],
    "mrpc": ["sentence1", "sentence2", "label", "idx"], "qqp": ["question1", "question2", "label", "idx"],
    "stsb": ["sentence1", "sentence2", "label", "idx"], "mnli": ["premise", "hypothesis", "label", "idx"],
    "qnli": ["question", "sentence", "label", "idx"], "rte": ["sentence1", "sentence2", "label", "idx"],
}


@pytest.mark.parametrize("task", sorted(GLUE))
def test_glue_fixture_has_hub_columns_and_label_space(task):
    raw = fixtures.glue_raw(task)
    dev = ["validation_matched", "validation_mismatched"] if task == "mnli" else ["validation"]
    assert list(raw) == ["train", *dev]
    for split in raw.values():
        assert split.column_names == HUB_COLUMNS[task]
        labels = np.array(split["label"])
        if task == "stsb":
            assert labels.dtype.kind == "f" and labels.min() >= 0.0 and labels.max() <= 5.0
        else:
            assert split.features["label"].num_classes == GLUE[task].num_labels
            assert set(labels.tolist()) == set(range(GLUE[task].num_labels))


@pytest.mark.parametrize("task", sorted(GLUE))
def test_glue_label_is_recoverable_from_a_keyword(task):
    """The signal a tiny model can learn: exactly one class keyword per example, naming its label."""
    keywords = fixtures._KEYWORDS[task]
    for split in fixtures.glue_raw(task).values():
        for ex in split:
            text = " ".join(ex[k] for k in GLUE[task].keys if k is not None).split()
            found = [i for i, w in enumerate(keywords) if w in text]
            assert len(found) == 1
            if task == "stsb":
                assert abs(ex["label"] - found[0]) <= 0.4 + 1e-6
            else:
                assert found[0] == ex["label"]


def test_mnli_mismatched_uses_other_words():
    raw = fixtures.glue_raw("mnli")
    words = {s: {w for t in raw[s]["premise"] for w in t.split()} for s in raw}
    assert words["train"] <= set(fixtures._FILLER["matched"])
    assert not words["validation_mismatched"] & words["train"]


def test_builders_are_deterministic():
    a = fixtures._glue_split("rte", "train", 16, "matched")
    b = fixtures._glue_split("rte", "train", 16, "matched")
    assert a.to_dict() == b.to_dict()
    squad = [fixtures._squad_split("v2", "train", 9).to_dict() for _ in range(2)]
    assert squad[0] == squad[1]
    x, y = fixtures._vtab_split("dtd", "test", 4), fixtures._vtab_split("dtd", "test", 4)
    assert [np.asarray(i).tolist() for i in x["image"]] == [np.asarray(i).tolist() for i in y["image"]]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_squad_answer_starts_are_exact(version):
    raw = fixtures.squad_raw(version)
    assert list(raw) == ["train", "validation"]
    ids = [i for split in raw.values() for i in split["id"]]
    assert len(ids) == len(set(ids))
    n_empty = 0
    for split in raw.values():
        assert split.column_names == ["id", "title", "context", "question", "answers"]
        for ex in split:
            answers = ex["answers"]
            assert len(answers["text"]) == len(answers["answer_start"])
            n_empty += not answers["text"]
            for text, start in zip(answers["text"], answers["answer_start"], strict=True):
                assert text and ex["context"][start:start + len(text)] == text
    assert (n_empty > 0) == (version == "v2")


@pytest.mark.parametrize("name", ["svhn", "cifar", "patch_camelyon", "smallnorb_ele"])
def test_vtab_fixture_images_and_labels(name):
    raw = fixtures.vtab_raw(name)
    assert list(raw) == ["train800", "val200", "train800val200", "test"]
    assert len(raw["train800val200"]) == len(raw["train800"]) + len(raw["val200"])
    n = VTAB[name].num_classes
    for split in raw.values():
        assert split.features["label"].num_classes == n
        assert all(0 <= y < n for y in split["label"])
        image = split[0]["image"]
        assert image.mode == "RGB" and image.size == (32, 32)


def test_vtab_pattern_is_learnable_by_nearest_centroid():
    raw = fixtures.vtab_raw("eurosat")  # 10 classes: every class appears in train800val200
    train = raw["train800val200"]
    x = np.stack([np.asarray(i, dtype=np.float32).ravel() for i in train["image"]])
    y = np.array(train["label"])
    centroids = np.stack([x[y == c].mean(0) for c in range(10)])
    test = raw["test"]
    xt = np.stack([np.asarray(i, dtype=np.float32).ravel() for i in test["image"]])
    pred = ((xt[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert (pred == np.array(test["label"])).mean() == 1.0


def test_all_texts_covers_every_text_column():
    texts = set(fixtures.all_texts())
    assert set(fixtures.glue_raw("qnli")["validation"]["question"]) <= texts
    assert set(fixtures.glue_raw("mnli")["validation_mismatched"]["hypothesis"]) <= texts
    assert set(fixtures.squad_raw("v2")["train"]["context"]) <= texts


def test_unknown_names_raise():
    with pytest.raises(ValueError, match="task"):
        fixtures.glue_raw("wnli")
    with pytest.raises(ValueError, match="version"):
        fixtures.squad_raw("v3")
    with pytest.raises(ValueError, match="VTAB"):
        fixtures.vtab_raw("imagenet")
