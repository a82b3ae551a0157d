"""VTAB-1k evaluation: test scored after the last epoch (optionally every N), final epoch reported by
default, best-of-test-epochs only by name; GLUE/SQuAD keep the paper's every-epoch, best-on-select rule."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from runs import run, spec_for

from tasks.config.runspec import ConfigError
from tasks.training.evaluation import EpochEvaluation, chosen_round

VTAB = ["task=vtab/dtd", "peft=capaboost_lora"]


def evaluated_epochs(every, epochs, steps_per_epoch=4):
    """Epoch ends at which the callback evaluates, over a whole simulated run."""
    callback, max_steps = EpochEvaluation({}, every), epochs * steps_per_epoch
    states = [SimpleNamespace(epoch=float(e), global_step=e * steps_per_epoch, max_steps=max_steps)
              for e in range(1, epochs + 1)]
    return [round(state.epoch) for state in states if callback.due(state)]


def test_evaluation_schedule():
    assert evaluated_epochs(1, 4) == [1, 2, 3, 4]
    assert evaluated_epochs(None, 100) == [100]
    assert evaluated_epochs(2, 5) == [2, 4, 5]  # the last epoch always
    assert evaluated_epochs(10, 100) == list(range(10, 101, 10))


def test_report_rules():
    scores = [0.2, 0.7, 0.7, 0.5]
    assert chosen_round(scores, "final_epoch") == 3
    assert chosen_round(scores, "best_test_epoch") == chosen_round(scores, "best_select_epoch") == 1
    with pytest.raises(ValueError, match="rule"):
        chosen_round(scores, "best")


def test_config_defaults_per_family(tmp_path):
    vtab = spec_for([*VTAB, "model=tiny", "data=fixture"], tmp_path, tiny=False).config  # shipped defaults
    assert (vtab["task"]["eval_every"], vtab["task"]["report"]) == (None, "final_epoch")
    assert (vtab["trainer"]["eval_batch_size"], vtab["trainer"]["num_workers"]) == (256, 8)
    glue = spec_for(["task=glue/cola", "model=tiny", "data=fixture"], tmp_path, tiny=False).config
    assert (glue["task"]["eval_every"], glue["task"]["report"]) == (1, "best_select_epoch")
    assert (glue["trainer"]["eval_batch_size"], glue["trainer"]["num_workers"]) == (None, 0)
    given = spec_for([*VTAB, "trainer.eval_batch_size=32"], tmp_path).config["trainer"]
    assert given["eval_batch_size"] == 32


@pytest.mark.parametrize("overrides, key", [
    (["task=glue/cola", "task.report=best_test_epoch"], "task.report"),
    ([*VTAB, "task.report=best_select_epoch"], "task.report"),
    ([*VTAB, "task.eval_every=0"], "task.eval_every"),
])
def test_bad_evaluation_settings(overrides, key, tmp_path):
    with pytest.raises(ConfigError, match=key):
        spec_for(overrides, tmp_path)


def test_default_run_scores_test_once_and_reports_the_final_epoch(tmp_path):
    result = run([*VTAB, "trainer.epochs=3"], tmp_path)
    (row,) = result["history"]
    assert round(row["epoch"]) == 3 and result["epochs_evaluated"] == 1 and result["best_epoch"] == 3
    assert result["best"] == result["metrics"] == {"accuracy": row["report"]["accuracy"]}
    assert result["selection"]["rule"] == "final_epoch"


def test_every_n_epochs_and_best_test_epoch_is_named(tmp_path):
    result = run([*VTAB, "trainer.epochs=3", "task.eval_every=2", "task.report=best_test_epoch"], tmp_path)
    history = result["history"]
    assert [round(row["epoch"]) for row in history] == [2, 3]
    accuracies = [row["report"]["accuracy"] for row in history]
    best = accuracies.index(max(accuracies))
    assert result["best_epoch"] == [2, 3][best] and result["best"]["accuracy"] == accuracies[best]
    assert result["selection"]["rule"] == "best_test_epoch"
    assert result["metrics"]["accuracy"] == accuracies[-1]
