"""GLUE metrics against hand-computed values and numpy/scipy oracles; SQuAD EM/F1 on hand-written cases."""
import math

import numpy as np
import pytest
from scipy.stats import rankdata

from tasks.data.fixtures import squad_raw
from tasks.facts.glue import GLUE
from tasks.suites.metrics import glue_metrics, normalize_answer, selection_score, squad_metrics, vtab_metrics


def test_cola_mcc_matches_the_confusion_matrix_formula():
    preds, labels = [1, 1, 0, 0, 1, 0, 1], [1, 0, 0, 0, 1, 1, 1]
    tp, tn, fp, fn = 3, 2, 1, 1
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    out = glue_metrics("cola", preds, labels)
    assert set(out) == {"mcc"}
    assert out["mcc"] == pytest.approx(expected)


def test_logits_are_argmaxed_and_accuracy_f1_are_fractions():
    labels = np.array([1, 0, 1, 1, 0, 0, 1, 0])
    preds = np.array([1, 0, 0, 1, 1, 0, 1, 0])
    logits = np.where(preds[:, None] == np.arange(2)[None, :], 2.0, -1.0)
    tp, fp, fn = 3, 1, 1
    for task in ("mrpc", "qqp"):
        out = glue_metrics(task, logits, labels)
        assert out["accuracy"] == pytest.approx(6 / 8)
        assert out["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert glue_metrics("mnli", np.eye(3)[[0, 1, 2, 2]], [0, 1, 1, 2]) == {"accuracy": 0.75}


def test_stsb_correlations_match_numpy_oracles():
    rng = np.random.default_rng(0)
    labels = rng.uniform(0, 5, size=40)
    preds = labels + rng.normal(0, 1.0, size=40)
    preds[:5] = preds[5]  # ties, so Spearman must use average ranks
    out = glue_metrics("stsb", preds[:, None], labels)  # (n, 1) regression logits are squeezed
    assert out["pearson"] == pytest.approx(np.corrcoef(preds, labels)[0, 1])
    assert out["spearman"] == pytest.approx(np.corrcoef(rankdata(preds), rankdata(labels))[0, 1])


def test_constant_regression_predictions_score_zero_not_nan():
    out = glue_metrics("stsb", np.full(6, 2.5), [0, 1, 2, 3, 4, 5])
    assert out == {"pearson": 0.0, "spearman": 0.0}


@pytest.mark.parametrize("task, metrics, expected", [
    ("cola", {"mcc": 0.6}, 0.6),
    ("stsb", {"pearson": 0.9, "spearman": 0.8}, 0.85),
    ("mrpc", {"accuracy": 0.8, "f1": 0.9}, 0.85),
    ("qqp", {"accuracy": 0.9, "f1": 0.7}, 0.8),
    ("sst2", {"accuracy": 0.93}, 0.93),
    ("mnli", {"accuracy": 0.85, "accuracy_mismatched": 0.1}, 0.85),
    ("qnli", {"accuracy": 0.9}, 0.9),
    ("rte", {"accuracy": 0.7}, 0.7),
])
def test_selection_score_is_the_official_rule(task, metrics, expected):
    assert selection_score(task, metrics) == pytest.approx(expected)


def test_every_task_has_a_selection_rule_over_its_own_metrics():
    for task, schema in GLUE.items():
        assert selection_score(task, dict.fromkeys(schema.metrics, 0.5)) == pytest.approx(0.5)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="task"):
        glue_metrics("wnli", [0], [0])
    with pytest.raises(ValueError, match="predictions"):
        glue_metrics("sst2", [0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="columns"):
        glue_metrics("sst2", np.zeros((3, 3)), [0, 1, 1])
    with pytest.raises(ValueError, match="f1"):
        selection_score("mrpc", {"accuracy": 1.0})


def test_vtab_accuracy_from_ids_and_logits():
    labels = [3, 0, 2, 2, 1]
    assert vtab_metrics([3, 0, 1, 2, 0], labels) == {"accuracy": 0.6}
    assert vtab_metrics(np.eye(4)[[3, 0, 2, 2, 1]] * 5.0, labels) == {"accuracy": 1.0}
    with pytest.raises(ValueError, match="vtab"):
        vtab_metrics([1, 2], labels)


# --- SQuAD -----------------------------------------------------------------------------------------

def test_normalisation_drops_case_punctuation_articles_and_spaces():
    assert normalize_answer("  The Cat, sat on   AN old-mat!") == "cat sat on oldmat"
    assert normalize_answer("theatre") == "theatre"  # "the" only as a whole word


def _ref(qid, *texts):
    return {"id": qid, "answers": {"text": list(texts), "answer_start": [0] * len(texts)}}


def test_squad_v1_exact_match_and_f1_by_hand():
    refs = [_ref("a", "Ada Lovelace"), _ref("b", "in 1905", "1905"), _ref("c", "the red ball")]
    preds = {"a": "Lovelace", "b": "1905.", "c": "a ball that is red"}
    out = squad_metrics(preds, refs, version_2=False)
    # a: EM 0, F1 2*(1*0.5)/(1.5) = 2/3; b: EM 1 (max over golds), F1 1;
    # c: gold "red ball" vs pred "ball that is red": same 2, P 2/4, R 2/2 -> F1 2/3
    assert out["exact_match"] == pytest.approx(1 / 3)
    assert out["f1"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    assert set(out) == {"exact_match", "f1"}


def test_squad_v2_no_answer_and_breakdown():
    refs = [_ref("has1", "Paris"), _ref("has2", "Oslo"), _ref("no1"), _ref("no2")]
    preds = {"has1": "Paris", "has2": "", "no1": "", "no2": "Oslo"}
    out = squad_metrics(preds, refs, version_2=True)
    assert out["exact_match"] == pytest.approx(0.5)
    assert out["f1"] == pytest.approx(0.5)
    assert out["HasAns_exact_match"] == pytest.approx(0.5)
    assert out["HasAns_f1"] == pytest.approx(0.5)
    assert out["NoAns_exact_match"] == pytest.approx(0.5)
    assert out["NoAns_f1"] == pytest.approx(0.5)
    assert all(0.0 <= v <= 1.0 for v in out.values())


def test_squad_accepts_a_dataset_and_requires_every_prediction():
    dev = squad_raw("v1")["validation"]
    gold = {ex["id"]: ex["answers"]["text"][0] for ex in dev}
    assert squad_metrics(gold, dev, version_2=False) == {"exact_match": 1.0, "f1": 1.0}
    wrong = dict(gold, **{dev[0]["id"]: "zzz"})
    assert squad_metrics(wrong, dev, version_2=False)["exact_match"] == pytest.approx(1 - 1 / len(dev))
    with pytest.raises(ValueError, match="no prediction"):
        squad_metrics({}, dev, version_2=False)
    with pytest.raises(ValueError, match="version_2"):
        squad_metrics({"x": ""}, [_ref("x")], version_2=False)
