"""The task facts: the best-epoch rule as data, every suite complete, the task options made from them."""
from __future__ import annotations

import pytest

from tasks.facts.common import Selection
from tasks.facts.families import FAMILIES


def test_selection_scores_the_mean_of_its_metrics():
    rule = Selection(("accuracy", "f1"))
    assert rule.score({"accuracy": 0.8, "f1": 0.5, "mcc": 9.0}) == pytest.approx((0.8 + 0.5) / 2)
    assert Selection(("mcc",)).score({"mcc": -0.25}) == -0.25
    with pytest.raises(ValueError, match="f1"):
        rule.score({"accuracy": 0.8})


def test_rule_names_are_result_json_spellings():
    """result.json's selection.metric as the string rules of earlier commits wrote it."""
    from tasks.facts.glue import GLUE

    assert {t: s.selection.name for t, s in GLUE.items()} == {
        "cola": "mcc", "sst2": "accuracy", "mrpc": "mean(accuracy,f1)", "qqp": "mean(accuracy,f1)",
        "stsb": "mean(pearson,spearman)", "mnli": "accuracy", "qnli": "accuracy", "rte": "accuracy"}
    assert {f: s.selection[s.tasks[0]].name for f, s in FAMILIES.items()} == {
        "glue": "mcc", "squad": "f1", "vtab": "accuracy", "math": "accuracy"}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_task_has_its_facts(family):
    suite = FAMILIES[family]
    assert set(suite.main_metric) == set(suite.selection) == set(suite.tasks)
    assert suite.protocol in suite.protocols and suite.report_rules


def test_vtab_facts():
    from tasks.facts import vtab

    assert len(vtab.VTAB) == 19 and vtab.GROUPS == ("natural", "specialized", "structured")
    assert [sum(s.group == g for s in vtab.VTAB.values()) for g in vtab.GROUPS] == [7, 4, 8]
    assert vtab.list_size("kitti", "test") == 711 and vtab.list_size("kitti", "train800val200") == 1000


def test_sweep_resolver_lists_a_family():
    from omegaconf import OmegaConf

    from tasks.config.schema import register_resolvers

    register_resolvers()
    names = OmegaConf.create({"t": "${tasks:squad}"}).t
    assert names == "squad/v1,squad/v2"
    with pytest.raises(Exception, match="no task family"):
        _ = OmegaConf.create({"t": "${tasks:imagenet}"}).t
